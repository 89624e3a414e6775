"""``inference.yml``, written next to an exported model: what it expects and returns (files,
input, channel order, resize, normalisation, feature dim; the graph does *not* L2-normalise),
so deploy code (ppise's or anyone's) needs no training config."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..config import load_yaml
from ..errors import ConfigError
from ..utils.fileio import atomic_write

INFO_FILE = "inference.yml"
PARAMS_FILE = "inference.pdiparams"
MODEL_FILES = {"pir": "inference.json", "legacy": "inference.pdmodel"}

# ops that change an image at random: fine for training, wrong for retrieval features
RANDOM_OPS = ("RandFlipImage", "RandomCrop", "RandomCropImage", "RandCropImageV2", "RandomErasing",
              "RandCropImage", "RandomResizedCrop", "ColorJitter", "RandAugment", "AutoAugment", "TimmAutoAugment")


def default_transform_ops(image_shape: List[int]) -> List[Dict[str, Any]]:
    """Resize to the input size, ImageNet normalisation: what ppise's eval configs use."""
    _, h, w = image_shape
    return [
        {"ResizeImage": {"size": [w, h], "interpolation": "bilinear", "backend": "cv2"}},
        {"NormalizeImage": {"scale": 0.00392157, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                            "order": ""}},
    ]


def check_deploy_ops(ops: List[Dict[str, Any]], image_shape: List[int], where: str) -> None:
    """Refuse random ops, and a fixed resize that does not give the graph's ``[H, W]``."""
    _, h, w = image_shape
    for i, item in enumerate(ops):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}[{i}] must be a single-key mapping {{OpName: {{params}}}}, got {item!r}")
        (name, params), = item.items()
        if name in RANDOM_OPS:
            raise ConfigError(f"{where}[{i}] is {name}, a random op: retrieval features must be deterministic; "
                              f"use the evaluation transforms (resize + normalise)")
        size = (params or {}).get("size") if name == "ResizeImage" else None
        if isinstance(size, int):
            size = [size, size]
        if size is not None and list(size) != [w, h]:
            raise ConfigError(f"{where}[{i}].ResizeImage.size {list(size)} ([w, h]) does not match "
                              f"Global.image_shape {list(image_shape)} ([C, H, W]): the exported graph takes "
                              f"{h}x{w} images")


def describe_preprocess(ops: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Plain facts for non-Python consumers, read off the op list."""
    out: Dict[str, Any] = {"channel_order": "RGB", "layout": "NCHW", "dtype": "float32"}
    for item in ops:
        (name, params), = item.items()
        params = params or {}
        if name == "ResizeImage":
            out["resize"] = {"size_wh": params.get("size"), "resize_short": params.get("resize_short"),
                             "interpolation": params.get("interpolation", "bilinear"),
                             "backend": params.get("backend", "cv2")}
        elif name == "NormalizeImage":
            out["normalize"] = {"scale": params.get("scale", 0.00392157),
                                "mean": params.get("mean", [0.485, 0.456, 0.406]),
                                "std": params.get("std", [0.229, 0.224, 0.225]),
                                "formula": "(pixel * scale - mean) / std"}
        elif name == "Pad":
            out["pad"] = dict(params)
    return out


class _PlainDumper(yaml.SafeDumper):
    """No ``&id001`` anchors: the file is read by people and by non-Python code."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_info(model_dir: str, info: Dict[str, Any]) -> str:
    path = os.path.join(model_dir, INFO_FILE)
    with atomic_write(path, encoding="utf-8") as f:
        f.write("# Written by tools/export_model.py: everything deploy needs, no training config required.\n")
        yaml.dump(info, f, Dumper=_PlainDumper, sort_keys=False, default_flow_style=None, width=100)
    return path


def read_info(model_dir: str) -> Optional[Dict[str, Any]]:
    """The folder's ``inference.yml`` (read as configs are), or None for a model exported by
    something else."""
    path = os.path.join(model_dir, INFO_FILE)
    return load_yaml(path) if os.path.isfile(path) else None


def find_model_files(model_dir: str, key: str = "Global.inference_model_dir",
                     prefer: Optional[str] = None) -> Tuple[str, str, str]:
    """``(format, model_file, params_file)`` of an exported folder; clear errors otherwise."""
    if not model_dir or not os.path.isdir(model_dir):
        raise ConfigError(f"inference model folder not found: {model_dir!r} (from {key}); "
                          f"export one with tools/export_model.py")
    params = os.path.join(model_dir, PARAMS_FILE)
    present = {fmt: os.path.join(model_dir, name) for fmt, name in MODEL_FILES.items()
               if os.path.isfile(os.path.join(model_dir, name))}
    if not present:
        raise ConfigError(f"no model file in {model_dir} (from {key}): expected "
                          f"{' or '.join(os.path.join(model_dir, n) for n in MODEL_FILES.values())}")
    if not os.path.isfile(params):
        raise ConfigError(f"model weights file not found: {params} (from {key})")
    fmt = prefer if prefer in present else ("pir" if "pir" in present else "legacy")
    return fmt, present[fmt], params
