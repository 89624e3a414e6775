"""Market-1501 / MSMT17 file names ``<pid>_c<camera>...`` -> (person id, 0-based camera), the
one parser of the datasets and the deploy scripts. MSMT17 cameras may have 2 digits
(``0007_c11_...``); id -1 marks junk (``0000``, the distractors, is kept).
"""
from __future__ import annotations

import os
import re
from typing import Optional, Tuple

RULE = "'<pid>_c<camera>...' (e.g. 0002_c1s1_000451_03.jpg)"
JUNK = -1
_PATTERNS = {digits: re.compile(rf"^(-1|\d+)_c(\d{{1,{digits}}})") for digits in (1, 2)}


def parse_name(path: str, camera_digits: int = 2) -> Tuple[int, int]:
    """``(pid, camera index from 0)`` of ``path``'s name (ValueError says what is wrong); Market
    has 1 ``camera_digits`` (``c12`` is camera 1, as in the protocol code), MSMT17 and others 2."""
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
