"""Shared command-line plumbing for tools/: PaddleClas's ``-c`` / ``-o`` and clean errors."""
from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable, List, Optional

from ..errors import PpiseError


_DISK_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}


def config_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], help="override a config key: -o Section.key.sub=value (repeatable)")
    return parser


def run_tool(main: Callable[[Optional[List[str]]], int]) -> None:
    """Run ``main``; a user-caused error prints one clear line (no traceback) and exits 2."""
    try:
        code = main(None)
    except PpiseError as err:
        print(f"ppise: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in _DISK_ERRORS:
            raise
        print(f"ppise: error: cannot write {err.filename or 'a file'}: {err.strerror} (disk full, quota or file size "
              f"limit); checkpoints already written are intact", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("ppise: interrupted; checkpoints already written are intact", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
