"""Shared command-line plumbing for tools/: PaddleClas's ``-c`` / ``-o`` and clean errors."""
from __future__ import annotations

import argparse
import errno
import logging
import sys
import traceback
from typing import Callable, List, Optional

from ..errors import PpiseError
from .logger import log_to_file

_DISK_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}


def config_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[], help="override a config key: -o Section.key.sub=value (repeatable)")
    return parser


def run_tool(main: Callable[[Optional[List[str]]], int]) -> None:
    """Run ``main``; a user-caused error prints one clear line (no traceback) and exits 2. What
    ends the run (that message, or an unexpected error's traceback) also ends ``train.log``."""
    def end(message: str, code: int) -> None:
        print(f"ppise: {message}", file=sys.stderr)
        log_to_file(logging.ERROR, f"run ended: {message}")
        sys.exit(code)

    try:
        code = main(None)
    except PpiseError as err:
        end(f"error: {err}", 2)
    except OSError as err:
        if err.errno not in _DISK_ERRORS:
            log_to_file(logging.ERROR, f"run ended by an unexpected error:\n{traceback.format_exc()}")
            raise
        end(f"error: cannot write {err.filename or 'a file'}: {err.strerror} (disk full, quota or file size "
            f"limit); checkpoints already written are intact", 2)
    except KeyboardInterrupt:
        end("interrupted; checkpoints already written are intact", 130)
    except Exception:
        log_to_file(logging.ERROR, f"run ended by an unexpected error:\n{traceback.format_exc()}")
        raise
    sys.exit(code or 0)
