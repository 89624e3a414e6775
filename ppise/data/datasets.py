"""Market-1501 and MSMT17 in PaddleClas's ``image_root`` + ``cls_label_path`` layout.

Person ids are kept raw (no relabelling): ppise learns from pseudo labels, and true ids
only serve diagnostics and evaluation. Junk images (id -1) are dropped, cameras are 0-based.
An unreadable image raises DataError naming its path; PaddleClas instead logs and silently
returns a random other image, which hides broken datasets.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Dict, List, Tuple, Union

import numpy as np
from paddle.io import Dataset
from PIL import Image

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from ..utils.logger import logger
from .transforms import Compose, build_transforms


class PersonDataset(Dataset):
    """Shared loader: sorted ``*.jpg`` glob, file-name regex -> (pid, camera)."""

    dataset_dir = ""  # relative to image_root
    pattern = re.compile(r"([-\d]+)_c(\d+)")

    def __init__(self, image_root: str, cls_label_path: str,
                 transform_ops: Union[None, List[Dict[str, Any]], Compose] = None,
                 backend: str = "cv2", **ignored: Any) -> None:
        name = type(self).__name__
        if ignored:
            logger.warning(f"{name}: ignoring dataset keys ppise does not use: {', '.join(sorted(ignored))}")
        self.backend = str(backend).lower()
        if self.backend not in ("cv2", "pil"):
            raise ConfigError(f"{name} backend={backend!r} must be 'cv2' or 'pil'")
        self.image_root, self.cls_label_path = image_root, cls_label_path
        self.root = os.path.join(str(image_root), self.dataset_dir, str(cls_label_path))
        self.transform = build_transforms(transform_ops, f"{name}.transform_ops")
        self.images, self.labels, self.cameras = self._scan()
        info = self.describe()
        logger.info(f"{name} {cls_label_path}: {info['num_ids']} ids | {info['num_images']} images | "
                    f"{info['num_cameras']} cameras ({self.root})")

    def _scan(self) -> Tuple[List[str], np.ndarray, np.ndarray]:
        if not os.path.isdir(self.root):
            raise DataError(f"dataset folder not found: {self.root} (from dataset.image_root={self.image_root!r} and "
                            f"dataset.cls_label_path={self.cls_label_path!r}; {type(self).__name__} reads "
                            f"image_root/{self.dataset_dir}/<cls_label_path>)")
        paths = sorted(glob.glob(os.path.join(self.root, "*.jpg")))
        if not paths:
            raise DataError(f"no .jpg images in {self.root} (check dataset.image_root / dataset.cls_label_path)")
        images, pids, cams = [], [], []
        for path in paths:
            match = self.pattern.search(os.path.basename(path))
            if match is None:
                raise DataError(f"image file name {path} does not match '<pid>_c<camera>...' ({self.pattern.pattern})")
            pid, cam = int(match.group(1)), int(match.group(2))
            if pid == -1:  # junk detections
                continue
            if cam < 1:
                raise DataError(f"image {path}: camera numbers start at 1 (c{cam})")
            images.append(path)
            pids.append(pid)
            cams.append(cam - 1)
        if not images:
            raise DataError(f"all {len(paths)} images in {self.root} are junk (id -1)")
        return images, np.asarray(pids, dtype=np.int64), np.asarray(cams, dtype=np.int64)

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
        img = np.asarray(self.transform(self.read(idx)))
        if img.ndim == 2:
            img = img[:, :, None]
        if not self.transform.outputs_chw:  # PaddleClas transposes in the dataset, after the ops
            img = img.transpose((2, 0, 1))
        img = np.ascontiguousarray(img, dtype=np.float32)
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
    pattern = re.compile(r"([-\d]+)_c(\d)")


@DATASETS.register
class MSMT17(PersonDataset):
    """Wei et al., CVPR 2018: 1041 train ids, 15 cameras (camera numbers may have 2 digits)."""

    dataset_dir = "msmt17/MSMT17_V1"
    pattern = re.compile(r"([-\d]+)_c(\d+)")
