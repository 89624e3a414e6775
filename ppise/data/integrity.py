"""Find unusable images when a dataset is built, not hours into training (PaddleClas silently
swaps in another image, which corrupts clusters). Verdicts are cached by (path, size, mtime) in
the run's output dir. ``check_images``: ``fast`` (JPEG markers and header; other files fully
decoded), ``full`` (PIL decode of every image) or ``off`` (a bad image raises DataError when read).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError
from ..utils import dist
from ..utils.fileio import atomic_write
from ..utils.logger import logger

MODES = ("fast", "full", "off")
CACHE_NAME = "image_check_cache.json"
REPORT_NAME = "bad_images.txt"
_SOI, _EOI = b"\xff\xd8\xff", b"\xff\xd9"
_TAIL = 4096  # encoders may pad after the end-of-image marker

# path -> (size, mtime_ns, mode, reason); reason "" means usable. Shared by every dataset of the process.
_verdicts: Dict[str, Tuple[int, int, str, str]] = {}
_state = {"out_dir": None, "loaded": False, "dirty": False, "warned": False}
_bad_seen: Dict[str, str] = {}  # every bad file met in this process, for the report file


def normalize_mode(value: object, where: str = "dataset.check_images") -> str:
    """Accept ``fast`` / ``full`` / ``off`` (and YAML booleans: True = fast, False = off)."""
    if isinstance(value, bool) or value is None:
        return "fast" if value else "off"
    if isinstance(value, str) and value.lower() in MODES:
        return value.lower()
    raise ConfigError(f"{where}={value!r} must be one of {', '.join(MODES)} (or True / False)")


def set_output_dir(out_dir: Optional[str]) -> None:
    """Keep the verdict cache and the bad-image list in ``out_dir`` (the run's output dir)."""
    if out_dir != _state["out_dir"]:
        _state.update(out_dir=out_dir, loaded=False, warned=False)
        _bad_seen.clear()
        if out_dir and dist.is_main():  # rebuilt by this run's datasets; a stale list would mislead
            with contextlib.suppress(OSError):
                os.remove(os.path.join(out_dir, REPORT_NAME))


def _pil_error(data: bytes, decode: bool) -> str:
    """What PIL finds wrong in ``data`` ("" if nothing): a header parse, or a full ``decode``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if decode:
                im.load()
            if im.width < 1 or im.height < 1:
                return f"empty image ({im.width}x{im.height})"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as err:
        if not decode:
            return f"bad JPEG header: {err}"
        if isinstance(err, UnidentifiedImageError):
            return f"not an image (unknown format, starts with {data[:8]!r})"
        return f"cannot decode: {str(err) or type(err).__name__}"
    return ""


def check_image(path: str, mode: str = "fast") -> str:
    """Why ``path`` cannot be used ("" when it can): empty, truncated or undecodable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        return f"cannot read: {err.strerror or err}"
    if not data:
        return "empty file (0 bytes)"
    if mode == "full" or not data.startswith(_SOI):
        return _pil_error(data, decode=True)
    if data.rfind(_EOI, max(0, len(data) - _TAIL)) < 0:  # strict even if PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on
        return f"truncated JPEG ({len(data)} bytes, no end-of-image marker)"
    return _pil_error(data, decode=False)


def _load_cache() -> None:
    """Merge the on-disk verdicts once per output dir; a missing or damaged file is just ignored."""
    if _state["loaded"] or not _state["out_dir"]:
        return
    _state["loaded"] = True
    path = os.path.join(_state["out_dir"], CACHE_NAME)
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f).get("entries", {})
        for key, (size, mtime, mode, reason) in entries.items():
            _verdicts.setdefault(key, (int(size), int(mtime), str(mode), str(reason)))
    except (OSError, ValueError, TypeError, AttributeError) as err:
        logger.warning(f"ignoring image check cache {path}: {err}")


def _save_cache() -> None:
    if not _state["out_dir"] or not _state["dirty"] or not dist.is_main():
        return
    path = os.path.join(_state["out_dir"], CACHE_NAME)
    try:
        with atomic_write(path, encoding="utf-8") as f:
            json.dump({"version": 1, "entries": {k: list(v) for k, v in _verdicts.items()}}, f)
        _state["dirty"] = False
    except OSError as err:  # a cache is an optimisation: say so once, do not stop
        if not _state["warned"]:
            logger.warning(f"cannot write image check cache {path}: {err}")
            _state["warned"] = True


def check_images(paths: Sequence[str], mode: str = "fast") -> List[str]:
    """Reasons (one per path, "" = usable), reusing verdicts whose (size, mtime) still match."""
    if mode == "off":
        return [""] * len(paths)
    _load_cache()
    reasons = []
    for path in paths:  # one stat per file; the check itself only for new or changed files
        key = os.path.abspath(path)
        try:
            st = os.stat(key)
        except OSError as err:
            reasons.append(f"cannot stat: {err.strerror or err}")
            continue
        stamp, hit = (st.st_size, st.st_mtime_ns), _verdicts.get(key)
        if not (hit and hit[:2] == stamp and hit[2] in (mode, "full")):
            hit = _verdicts[key] = (*stamp, mode, check_image(key, mode))
            _state["dirty"] = True
        reasons.append(hit[3])
    _save_cache()
    return reasons


def write_report(bad: Iterable[Tuple[str, str]]) -> Optional[str]:
    """Add ``bad`` (path, reason) to ``{output_dir}/bad_images.txt``; returns its path (None without an output dir)."""
    _bad_seen.update(dict(bad))
    out = _state["out_dir"]
    if not out or not _bad_seen or not dist.is_main():
        return None
    path = os.path.join(out, REPORT_NAME)
    try:
        with atomic_write(path, encoding="utf-8") as f:
            f.writelines(f"{p}\t{r}\n" for p, r in sorted(_bad_seen.items()))
    except OSError as err:
        logger.warning(f"cannot write the list of bad images {path}: {err}")
        return None
    return path
