"""Market-1501 / MSMT17 file names: ``<pid>_c<camera>...`` -> (person id, 0-based camera).

The one parser of the datasets and the deploy scripts. Market-1501: ``0002_c1s1_000451_03.jpg``
(one camera digit, 1-6); MSMT17 has up to 15 cameras (``0007_c11_...``). Id -1 marks junk
(``0000``, the distractors, is kept); file cameras start at 1, returned indices at 0.
"""
from __future__ import annotations

import os
import re
from typing import Optional, Tuple

RULE = "'<pid>_c<camera>...' (e.g. 0002_c1s1_000451_03.jpg)"
JUNK = -1
_PATTERNS = {digits: re.compile(rf"^(-1|\d+)_c(\d{{1,{digits}}})") for digits in (1, 2)}


def parse_name(path: str, camera_digits: int = 2) -> Tuple[int, int]:
    """``(pid, camera index from 0)`` of ``path``'s file name; ValueError says what is wrong.
    ``camera_digits``: 1 for Market-1501 (``c12`` is camera 1, as in the original protocol code),
    2 for MSMT17 and unknown datasets."""
    name = os.path.basename(path)
    match = _PATTERNS[camera_digits].match(name)
    if match is None:
        raise ValueError(f"does not follow Market-1501 naming {RULE}")
    camera = int(match.group(2))
    if camera < 1:
        raise ValueError(f"camera numbers start at 1 (c{match.group(2)})")
    return int(match.group(1)), camera - 1


def try_parse_name(path: str, camera_digits: int = 2) -> Optional[Tuple[int, int]]:
    """Like :func:`parse_name`, None instead of an error."""
    try:
        return parse_name(path, camera_digits)
    except ValueError:
        return None
