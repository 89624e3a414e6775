"""Batched preprocessing with ppise's own transforms: each image exactly as
``PersonDataset.__getitem__`` gives it to evaluation (``Compose``, then HWC -> CHW)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..data.transforms import build_transforms
from ..errors import ConfigError
from .images import read_rgb
from .model_info import default_transform_ops


def select_ops(config_ops: Optional[List[Dict[str, Any]]], info: Optional[Dict[str, Any]],
               image_shape: Optional[List[int]]) -> tuple:
    """``(ops, where)``: the deploy config wins, then ``inference.yml``, then the default."""
    if config_ops:
        return config_ops, "RecPreProcess.transform_ops"
    ops = ((info or {}).get("PreProcess") or {}).get("transform_ops")
    if ops:
        return ops, "inference.yml PreProcess.transform_ops"
    if image_shape is None:
        raise ConfigError("no preprocessing known: the model folder has no inference.yml and "
                          "RecPreProcess.transform_ops is empty; set RecPreProcess.transform_ops")
    return default_transform_ops(image_shape), "default (resize + ImageNet normalise)"


class Preprocessor:
    """``paths -> [N, C, H, W] float32``: decode (PIL RGB), ppise transforms, CHW, stack."""

    def __init__(self, ops: Sequence[Dict[str, Any]], where: str = "RecPreProcess.transform_ops") -> None:
        self.compose = build_transforms(list(ops), where)
        self.where = where

    def __call__(self, paths: Sequence[str]) -> np.ndarray:
        arrays = [self.compose.chw(read_rgb(p)) for p in paths]  # decoding is per file by nature
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ConfigError(f"{self.where} gives images of different shapes {sorted(shapes)}: "
                              "add a ResizeImage with a fixed size so they can be batched")
        return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)
