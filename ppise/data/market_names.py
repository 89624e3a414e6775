"""Market-1501 / MSMT17 file names: ``<pid>_c<camera>...`` -> (person id, 0-based camera).

One parser for the datasets (``ppise.data.datasets``) and the deploy scripts
(``ppise.deploy.images``). Market-1501 names look like ``0002_c1s1_000451_03.jpg``: one
camera digit (1-6) followed by the sequence ``s1``; MSMT17 in the Market layout has up to
15 cameras (``0007_c11_...``), so its camera may have 2 digits. Person id ``-1`` marks junk
detections (``0000`` is the distractor id and is kept). Camera numbers in the file start
at 1; the parser returns 0-based camera indices, as training and evaluation use them.
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

    ``camera_digits``: 1 for Market-1501 (``c12`` reads as camera 1, as the original
    protocol code does), 2 for MSMT17 and for names whose dataset is not known."""
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
