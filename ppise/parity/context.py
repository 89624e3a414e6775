"""What every parity section reads: the options, the resolved config, the data, the images.

The config is the user's with only what a parity run must change, each change a NOTE row:
the device, the dataset root, no backbone ImageNet download (the weights come from a file),
and ``Global.image_shape`` when it contradicts the evaluation resize (the official file says
[3, 128, 256] while its ResizeImage gives 256x128 images; export needs the real shape).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import get, get_config
from ..errors import ConfigError, DataError
from .report import NOTE, Row

EVAL_SPLITS = ("Query", "Gallery")
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@dataclass(frozen=True)
class ParityContext:
    """Made once before any section runs; sections read it and return what they produce."""

    args: argparse.Namespace  # the parsed ``tools/parity_check.py`` command line
    cfg: Dict[str, Any]
    work_dir: str
    data_root: str
    image_paths: List[str]  # the first ``--num-images`` query images
    decoded: List[np.ndarray]  # the same images, decoded RGB uint8 HWC
    batch: np.ndarray  # the same images through the config's eval transforms, [N, C, H, W] float32

    def path(self, *parts: str) -> str:
        return os.path.join(self.work_dir, *parts)


def _resize_params(cfg: Dict[str, Any]) -> List[dict]:
    """The ``ResizeImage`` options of the Query and Gallery evaluation transforms."""
    out = []
    for split in EVAL_SPLITS:
        ops = get(cfg, f"DataLoader.Eval.{split}.dataset.transform_ops", None)
        if not isinstance(ops, list):
            raise ConfigError(f"DataLoader.Eval.{split}.dataset.transform_ops must list the evaluation transforms")
        out += [op["ResizeImage"] for op in ops if isinstance(op, dict) and isinstance(op.get("ResizeImage"), dict)]
    return out


def resolve_image_shape(cfg: Dict[str, Any], requested: Optional[Sequence[int]]) -> tuple:
    """``(shape, note)``: the input shape the evaluation transforms really produce."""
    declared = list(cfg["Global"]["image_shape"])
    if requested is not None:
        if len(requested) != 3 or any(int(v) < 1 for v in requested):
            raise ConfigError(f"--image-shape must be C H W (three positive ints), got {list(requested)}")
        c, h, w = (int(v) for v in requested)
        cfg["Global"]["image_shape"] = [c, h, w]
        for params in _resize_params(cfg):
            if params.get("resize_short") is None:
                params["size"] = [w, h]
        return [c, h, w], (
            f"--image-shape {list(requested)}: Global.image_shape and every evaluation ResizeImage size set to it "
            f"(config had {declared}); both sides see the same smaller images")
    sizes = [[p["size"]] * 2 if isinstance(p["size"], int) else list(p["size"])
             for p in _resize_params(cfg) if p.get("size") is not None]
    if not sizes:
        return declared, None
    if any(s != sizes[0] for s in sizes):
        raise ConfigError(f"DataLoader.Eval Query and Gallery resize to different sizes {sizes}: features would "
                          "not be comparable")
    w, h = sizes[0]
    actual = [declared[0], h, w]
    if actual == declared:
        return declared, None
    cfg["Global"]["image_shape"] = actual
    return actual, (f"config Global.image_shape {declared} ([C, H, W]) contradicts the evaluation ResizeImage "
                    f"size {sizes[0]} ([w, h]); the check uses {actual}, the shape the images have (the export "
                    f"input shape; PaddleClas's own export would take it from Global.image_shape)")


def resolve_config(args: argparse.Namespace, data_root: str) -> Tuple[Dict[str, Any], List[int], List[Row]]:
    """``(cfg, image_shape, notes)`` for a parity run."""
    cfg = get_config(args.config, list(args.override))
    notes: List[Row] = []
    glob = cfg["Global"]
    if glob.get("device") != args.device:
        notes.append(Row("setup", "Global.device", str(glob.get("device")), args.device, status=NOTE,
                         detail=f"the check runs on {args.device} (--device); the config says {glob.get('device')!r}"))
    glob.update(device=args.device, pretrained_model=None, checkpoints=None)
    backbone = get(cfg, "Arch.Backbone", None)
    if isinstance(backbone, dict) and backbone.get("pretrained"):
        backbone["pretrained"] = False  # ImageNet init is irrelevant: every weight comes from one file
    for where in ("DataLoader.Train",) + tuple(f"DataLoader.Eval.{s}" for s in EVAL_SPLITS):
        ds, loader = get(cfg, f"{where}.dataset", None), get(cfg, f"{where}.loader", None)
        if isinstance(ds, dict):
            ds["image_root"] = data_root
        if args.num_workers is not None and isinstance(loader, dict):
            loader["num_workers"] = int(args.num_workers)
    shape, note = resolve_image_shape(cfg, args.image_shape)
    if note:
        notes.append(Row("setup", "image shape", "", str(shape), status=NOTE, detail=note))
    return cfg, shape, notes


def prepare_data(args: argparse.Namespace, work_dir: str) -> Tuple[str, Optional[Row]]:
    """``(data_root, note)``: the user's folder, or a small synthetic Market-format set."""
    if args.data:
        if not os.path.isdir(args.data):
            raise DataError(f"--data {args.data!r} is not a folder (give the dataset image_root, the folder that "
                            "holds market1501/Market-1501-v15.09.15 or msmt17/MSMT17_V1)")
        if os.path.isdir(os.path.join(args.data, "bounding_box_test")):
            up = os.path.dirname(os.path.dirname(os.path.abspath(args.data)))
            raise DataError(f"--data {args.data!r} is the dataset folder itself; give its image_root (the folder "
                            f"holding market1501/Market-1501-v15.09.15, PaddleClas's image_root), e.g. --data {up}")
        return os.path.abspath(args.data), None
    from synthreid import dataset_present, make_synthetic_reid

    root = os.path.join(work_dir, "synthetic")
    if dataset_present(root):  # a kept --work-dir: same seed and size give the same files
        return root, Row("setup", "data", "", "synthetic (reused)", status=NOTE,
                         detail=f"no --data: reused the synthetic Market-format set in {root}")
    summary = make_synthetic_reid(root, num_ids=int(args.synthetic_ids), seed=int(args.seed),
                                  images_per_id=(4, 8), cams_per_id=(2, 4))
    counts = {k: v for k, v in summary.items() if k.startswith("num_")}
    return root, Row("setup", "data", "", f"synthetic, {args.synthetic_ids} ids", status=NOTE,
                     detail=f"no --data: generated a synthetic Market-format set in {root} ({counts})")


def build_context(args: argparse.Namespace) -> Tuple[ParityContext, List[Row]]:
    """The context and the setup NOTE rows (data, device, image shape), shown first."""
    from ..data.loader import build_dataset

    work_dir = args.work_dir or tempfile.mkdtemp(prefix="ppise_parity_")
    os.makedirs(work_dir, exist_ok=True)
    data_root, data_note = prepare_data(args, work_dir)
    cfg, shape, notes = resolve_config(args, data_root)
    ds = build_dataset(get(cfg, "DataLoader.Eval.Query"), "DataLoader.Eval.Query")
    n = min(int(args.num_images), len(ds))
    if n < 1:
        raise ConfigError(f"--num-images must be >= 1, got {args.num_images}")
    batch = np.stack([ds[i][0] for i in range(n)]).astype(np.float32)
    if list(batch.shape[1:]) != list(shape):
        raise ConfigError(f"the evaluation transforms give images of shape {list(batch.shape[1:])}, "
                          f"not Global.image_shape {list(shape)}")
    ctx = ParityContext(args, cfg, work_dir, data_root, [ds.images[i] for i in range(n)],
                        [np.asarray(ds.read(i)) for i in range(n)], batch)
    return ctx, ([data_note] if data_note else []) + notes
