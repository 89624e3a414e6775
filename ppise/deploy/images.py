"""Which images to process, who they show, and how they are decoded.

Inputs: one image, a folder (sorted, non-recursive, as the datasets scan) or a list file
(``path [pid [camid]]`` per line, PaddleClas's ``data_file``; camid 0-based). Decoding matches
the evaluation datasets (PIL, RGB, uint8 HWC), so deploy features equal ``tools/eval.py``'s.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..data.market_names import parse_name, try_parse_name
from ..errors import ConfigError, DataError
from ..utils.logger import logger

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LIST_EXTENSIONS = (".txt", ".list", ".lst")
UNKNOWN = -1  # pid / camera of an image whose identity is not known
MAX_LISTED = 20  # bad files named in the log; the JSON summary and bad_images.txt hold all


@dataclass
class ImageList:
    """Paths with person ids and cameras (``UNKNOWN`` where not given)."""

    paths: List[str]
    pids: Optional[np.ndarray] = None
    cams: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        unknown = np.full(len(self.paths), UNKNOWN, np.int64)
        self.pids = unknown if self.pids is None else self.pids
        self.cams = unknown.copy() if self.cams is None else self.cams

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, keep: np.ndarray) -> "ImageList":
        idx = np.flatnonzero(keep)
        return ImageList([self.paths[i] for i in idx], self.pids[idx], self.cams[idx])


def read_list_file(path: str, image_root: Optional[str] = None, delimiter: Optional[str] = None,
                   key: str = "Global.infer_imgs") -> ImageList:
    """Relative paths are taken from ``image_root``, else the list file's folder."""
    base = image_root or os.path.dirname(os.path.abspath(path))
    rows, labelled = [], None  # rows: (path, pid, cam)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read list file {path} (from {key}): {err}") from err
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p for p in line.split(delimiter or None) if p.strip()]  # None: any whitespace
        has_label = len(parts) > 1
        if labelled is None:
            labelled = has_label
        try:
            pid = int(parts[1]) if has_label else UNKNOWN
            cam = int(parts[2]) if len(parts) > 2 else UNKNOWN
        except ValueError:
            raise DataError(f"list file {path} line {lineno}: expected 'path pid [camid]' with integer ids, "
                            f"got {line!r}") from None
        if has_label != labelled:
            raise DataError(f"list file {path} line {lineno}: some lines have a person id and some not")
        img = parts[0].strip()
        rows.append((img if os.path.isabs(img) else os.path.join(base, img), pid, cam))
    if not rows:
        raise DataError(f"list file {path} (from {key}) names no images")
    paths, pids, cams = zip(*rows)
    return ImageList(list(paths), np.asarray(pids, np.int64), np.asarray(cams, np.int64))


def list_images(path: Optional[str], key: str = "Global.infer_imgs", image_root: Optional[str] = None,
                delimiter: Optional[str] = None, naming: str = "none",
                strict: bool = True) -> ImageList:
    """One image, a folder of images, or a list file -> ``ImageList``: ids from a list file,
    else from Market names when ``naming`` is 'market' (``strict``: see ``with_market_ids``)."""
    if not path:
        raise ConfigError(f"{key} is not set: give an image, a folder of images or a list file")
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(os.path.join(path, n)))
        if not names:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path} (from {key})")
        images = ImageList([os.path.join(path, n) for n in names])
    elif not os.path.isfile(path):
        raise DataError(f"image path not found: {path} (from {key})")
    elif path.lower().endswith(LIST_EXTENSIONS):
        return read_list_file(path, image_root, delimiter, key)
    elif not path.lower().endswith(IMAGE_EXTENSIONS):
        raise DataError(f"{path} (from {key}) is neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a list file "
                        f"({', '.join(LIST_EXTENSIONS)}) nor a folder")
    else:
        images = ImageList([path])
    return with_market_ids(images, key, strict) if naming == "market" else images


def with_market_ids(images: ImageList, key: str, strict: bool = True) -> ImageList:
    """Ids and 0-based cameras from Market-1501 / MSMT17 file names, by the datasets' parser.

    ``strict``: a name not in Market style is an error and junk (id -1) is dropped, as the
    datasets do; else (a plain search) such names get ``UNKNOWN`` ids and all are kept."""
    parsed = []
    for path in images.paths:
        try:
            ids = parse_name(path) if strict else try_parse_name(path)
        except ValueError as err:
            raise DataError(f"file name {path} (from {key}) {err}; give a list file 'path pid [camid]' "
                            f"instead, or set IndexProcess.naming=none when ids are unknown") from None
        parsed.append(ids or (UNKNOWN, UNKNOWN))
    pids, cams = np.asarray(parsed, np.int64).reshape(-1, 2).T
    out = ImageList(list(images.paths), pids, cams)
    if strict:
        out = out.select(pids != -1)
        if not len(out):
            raise DataError(f"all {len(images)} images from {key} are junk (person id -1)")
    return out


def read_rgb(path: str) -> np.ndarray:
    """Decode like the evaluation datasets (PIL -> RGB uint8 HWC); a bad file names its path."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: not a decodable image ({type(err).__name__}: {err})") from err


def drop_unusable(images: ImageList, key: str,
                  max_bad_ratio: float = 1.0) -> Tuple[ImageList, List[Dict[str, str]]]:
    """Decode-check every image, as training does: ``(usable images, [{path, reason}])``.

    The bad ones are listed in the log and skipped; DataError when none is usable or when
    their share is above ``max_bad_ratio`` (``Global.max_bad_image_ratio``)."""
    from ..data.integrity import check_image

    reasons = [check_image(p, "full") for p in images.paths]  # deploy decodes every image anyway
    bad = [{"path": p, "reason": r} for p, r in zip(images.paths, reasons) if r]
    if not bad:
        return images, bad
    listed = "\n".join(f"  {b['path']}: {b['reason']}" for b in bad[:MAX_LISTED])
    more = f"\n  ... and {len(bad) - MAX_LISTED} more (all in the JSON summary)" if len(bad) > MAX_LISTED else ""
    share = len(bad) / len(images)
    head = f"{len(bad)} of {len(images)} images from {key} are unusable ({100 * share:.1f}%)"
    if len(images) == 1:
        raise DataError(f"cannot read image {bad[0]['path']} (from {key}): {bad[0]['reason']}")
    if len(bad) == len(images):
        raise DataError(f"{head}: nothing left to process:\n{listed}{more}")
    if share > max_bad_ratio:
        raise DataError(f"{head}, more than Global.max_bad_image_ratio={max_bad_ratio:g}: refusing to go on. Fix or "
                        f"remove them, or raise the limit (-o Global.max_bad_image_ratio=1.0 skips any number):"
                        f"\n{listed}{more}")
    logger.warning(f"{head}; skipping them:\n{listed}{more}")
    return images.select(np.asarray([not r for r in reasons], dtype=bool)), bad
