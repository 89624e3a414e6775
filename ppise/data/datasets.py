"""Market-1501 and MSMT17 in PaddleClas's ``image_root`` + ``cls_label_path`` layout.

Person ids stay raw (ppise learns from pseudo labels); junk (id -1) is dropped; cameras are
0-based. Unusable files are listed and skipped when the dataset is built (``integrity``), and
above ``max_bad_image_ratio`` it refuses to build; PaddleClas silently returns another image.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Dict, List, Tuple, Union

import numpy as np
from paddle.io import Dataset
from PIL import Image

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from ..utils.logger import logger
from .integrity import check_images, normalize_mode, write_report
from .market_names import JUNK, parse_name
from .transforms import Compose, build_transforms

MAX_LISTED = 10  # bad files named in the log; the report file holds all of them
_described: set = set()  # dataset lines already logged by this process


class PersonDataset(Dataset):
    """Shared loader: sorted ``*.jpg`` glob, file name -> (pid, camera) (``ppise.data.market_names``)."""

    dataset_dir = ""  # relative to image_root
    camera_digits = 2  # digits of the camera number in the file name

    def __init__(self, image_root: str, cls_label_path: str,
                 transform_ops: Union[None, List[Dict[str, Any]], Compose] = None,
                 backend: str = "cv2", check_images: Union[bool, str] = "fast",
                 max_bad_image_ratio: float = 0.01, **ignored: Any) -> None:
        name = type(self).__name__
        if ignored:
            logger.warning(f"{name}: ignoring dataset keys ppise does not use: {', '.join(sorted(ignored))}")
        self.backend = str(backend).lower()
        if self.backend not in ("cv2", "pil"):
            raise ConfigError(f"{name} backend={backend!r} must be 'cv2' or 'pil'")
        self.check_mode = normalize_mode(check_images, f"{name} dataset.check_images")
        ratio = max_bad_image_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"{name} dataset.max_bad_image_ratio={ratio!r} must be a number in [0, 1] "
                              f"(the share of unusable files tolerated, e.g. 0.01)")
        self.max_bad_image_ratio = float(ratio)
        self.image_root, self.cls_label_path = image_root, cls_label_path
        self.root = os.path.join(str(image_root), self.dataset_dir, str(cls_label_path))
        self.transform = build_transforms(transform_ops, f"{name}.transform_ops")
        self.images, self.labels, self.cameras = self._scan()
        info = self.describe()
        line = (f"{name} {cls_label_path}: {info['num_ids']} ids | {info['num_images']} images | "
                f"{info['num_cameras']} cameras ({self.root})")
        if line not in _described:  # the same folder is read again (e.g. eval transforms for clustering)
            _described.add(line)
            logger.info(line)

    def _scan(self) -> Tuple[List[str], np.ndarray, np.ndarray]:
        if not os.path.isdir(self.root):
            raise DataError(f"dataset folder not found: {self.root} (from dataset.image_root={self.image_root!r} and "
                            f"dataset.cls_label_path={self.cls_label_path!r}; {type(self).__name__} reads "
                            f"image_root/{self.dataset_dir}/<cls_label_path>)")
        paths = sorted(glob.glob(os.path.join(self.root, "*.jpg")))
        if not paths:
            raise DataError(f"no .jpg images in {self.root} (check dataset.image_root / dataset.cls_label_path)")
        named, bad = [], []  # named: (path, pid, camera)
        for path in paths:  # file names only: cheap string work
            try:
                pid, cam = parse_name(path, self.camera_digits)
            except ValueError as err:
                bad.append((path, f"wrong file name: {err}"))
                continue
            if pid != JUNK:  # junk detections (id -1) are dropped unread
                named.append((path, pid, cam))
        reasons = check_images([n[0] for n in named], self.check_mode)
        bad += [(n[0], r) for n, r in zip(named, reasons) if r]
        self.bad_files = sorted(bad)
        if bad:
            self._report_bad(len(paths))
        kept = [n for n, r in zip(named, reasons) if not r]
        if not kept:
            raise DataError(f"no usable image in {self.root}: {len(paths)} .jpg files, {len(bad)} unusable, the rest junk (id -1)")
        images, pids, cams = zip(*kept)
        return list(images), np.asarray(pids, dtype=np.int64), np.asarray(cams, dtype=np.int64)

    def _report_bad(self, total: int) -> None:
        """Name the bad files (first MAX_LISTED in the log, all in the report file); refuse above the ratio."""
        bad, name = self.bad_files, type(self).__name__
        report = write_report(bad)
        listed = "\n".join(f"  {p}: {r}" for p, r in bad[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        where = f" (all listed in {report})" if report else ""
        share = len(bad) / total
        head = (f"{name} {self.cls_label_path}: {len(bad)} of {total} files in {self.root} are unusable "
                f"({100 * share:.2f}%){where}")
        if share > self.max_bad_image_ratio:
            raise DataError(f"{head}, more than dataset.max_bad_image_ratio={self.max_bad_image_ratio:g} "
                            f"({100 * self.max_bad_image_ratio:g}%): refusing to start. Fix or remove them, or raise "
                            f"the limit, e.g. -o DataLoader.Train.dataset.max_bad_image_ratio=0.05 (or the "
                            f"DataLoader.Eval.* dataset that reads {self.cls_label_path}):\n{listed}{more}")
        logger.warning(f"{head}; skipping them (limit dataset.max_bad_image_ratio="
                       f"{self.max_bad_image_ratio:g}):\n{listed}{more}")

    def describe(self) -> Dict[str, int]:
        return {"num_images": len(self.images), "num_ids": int(np.unique(self.labels).size),
                "num_cameras": int(np.unique(self.cameras).size)}

    def read(self, idx: int) -> Union[np.ndarray, Image.Image]:
        """Decode image ``idx`` as RGB (uint8 HWC array for backend 'cv2', PIL for 'pil')."""
        path = self.images[idx]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
        return np.array(img, dtype=np.uint8) if self.backend == "cv2" else img

    def __getitem__(self, idx: int) -> Tuple[np.ndarray, np.int64, np.int64, np.int64]:
        img = self.transform.chw(self.read(idx))
        return img, self.labels[idx], self.cameras[idx], np.int64(idx)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def class_num(self) -> int:
        return int(np.unique(self.labels).size)


@DATASETS.register
class Market1501(PersonDataset):
    """Zheng et al., ICCV 2015: 751 train ids, 6 cameras."""

    dataset_dir = "market1501/Market-1501-v15.09.15"
    camera_digits = 1


@DATASETS.register
class MSMT17(PersonDataset):
    """Wei et al., CVPR 2018: 1041 train ids, 15 cameras (camera numbers may have 2 digits)."""

    dataset_dir = "msmt17/MSMT17_V1"
    camera_digits = 2
