"""What every parity section reads: the options, the resolved config, the data, the images.

``build_context`` makes it once, before any section runs; sections never change it and
pass what they produce on by returning it (see ``model.ModelResult``).

The config is the user's (e.g. PaddleClas's ``ResNet50_UReID_infer.yaml``) with only what a
parity run must change: the device, the dataset root, the backbone's ImageNet download
(the weights come from a file), and ``Global.image_shape`` when it contradicts the
evaluation resize (the official file says [3, 128, 256] while its ResizeImage gives
256x128 images; export and deploy need the shape the images really have). Each change
is reported as a NOTE row.
"""
from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..config import dump, get, get_config
from ..errors import ConfigError, DataError
from .report import NOTE, Row

EVAL_SPLITS = ("Query", "Gallery")
FEATURE_TOL = 1e-5  # largest |difference| of two features (or inputs) that counts as equal
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SYNTHETIC_DEFAULTS = {"images_per_id": (4, 8), "cams_per_id": (2, 4)}


@dataclass
class ParityOptions:
    config: str
    overrides: Sequence[str] = ()
    weights: Optional[str] = None
    data: Optional[str] = None
    work_dir: Optional[str] = None
    sections: Sequence[str] = ("model", "deploy", "metrics", "roundtrip")
    num_images: int = 4
    image_shape: Optional[Sequence[int]] = None
    device: str = "cpu"
    synthetic_ids: int = 12
    num_workers: Optional[int] = None
    mkldnn: bool = True
    cpu_threads: int = 2
    train_config: Optional[str] = None
    ppise_checkpoint: Optional[str] = None
    perturb: Optional[str] = None
    expect_market: Optional[Sequence[float]] = None
    seed: int = 0


@dataclass(frozen=True)
class ParityContext:
    options: ParityOptions
    cfg: Dict[str, Any]
    work_dir: str
    data_root: str
    image_shape: List[int]
    notes: List[Row]  # setup facts (data, device, image shape), shown first
    image_paths: List[str]  # the first ``num_images`` query images
    decoded: List[np.ndarray]  # the same images, decoded RGB uint8 HWC
    batch: np.ndarray  # the same images through the config's eval transforms, [N, C, H, W] float32

    def path(self, *parts: str) -> str:
        return os.path.join(self.work_dir, *parts)

    def config_file(self, name: str = "parity_config.yaml") -> str:
        """The resolved config on disk, for the tools run in child processes."""
        path = self.path(name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(dump(self.cfg))
        return path


def _eval_ops(cfg: Dict[str, Any], split: str) -> list:
    ops = get(cfg, f"DataLoader.Eval.{split}.dataset.transform_ops", None)
    if not isinstance(ops, list):
        raise ConfigError(f"DataLoader.Eval.{split}.dataset.transform_ops must list the evaluation transforms")
    return ops


def _resize_sizes(cfg: Dict[str, Any]) -> List[List[int]]:
    sizes = []
    for split in EVAL_SPLITS:
        for op in _eval_ops(cfg, split):
            params = op.get("ResizeImage") if isinstance(op, dict) else None
            if isinstance(params, dict) and params.get("size") is not None:
                size = params["size"]
                sizes.append([size, size] if isinstance(size, int) else list(size))
    return sizes


def _set_image_shape(cfg: Dict[str, Any], shape: Sequence[int]) -> None:
    c, h, w = (int(v) for v in shape)
    cfg["Global"]["image_shape"] = [c, h, w]
    for split in EVAL_SPLITS:
        for op in _eval_ops(cfg, split):
            params = op.get("ResizeImage") if isinstance(op, dict) else None
            if isinstance(params, dict) and params.get("resize_short") is None:
                params["size"] = [w, h]


def resolve_image_shape(cfg: Dict[str, Any], requested: Optional[Sequence[int]]) -> tuple:
    """``(shape, note)``: the input shape the evaluation transforms really produce."""
    declared = list(cfg["Global"]["image_shape"])
    if requested is not None:
        if len(requested) != 3 or any(int(v) < 1 for v in requested):
            raise ConfigError(f"--image-shape must be C H W (three positive ints), got {list(requested)}")
        _set_image_shape(cfg, requested)
        return list(cfg["Global"]["image_shape"]), (
            f"--image-shape {list(requested)}: Global.image_shape and every evaluation ResizeImage size set to it "
            f"(config had {declared}); both sides see the same smaller images")
    sizes = _resize_sizes(cfg)
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


def resolve_config(opts: ParityOptions, data_root: str) -> tuple:
    """``(cfg, image_shape, notes)`` for a parity run."""
    cfg = get_config(opts.config, list(opts.overrides))
    notes: List[Row] = []
    glob = cfg["Global"]
    if glob.get("device") != opts.device:
        notes.append(Row("setup", "Global.device", str(glob.get("device")), opts.device, status=NOTE,
                         detail=f"the check runs on {opts.device} (--device); the config says {glob.get('device')!r}"))
    glob["device"] = opts.device
    glob["pretrained_model"] = None
    glob["checkpoints"] = None
    backbone = get(cfg, "Arch.Backbone", None)
    if isinstance(backbone, dict) and backbone.get("pretrained"):
        backbone["pretrained"] = False  # ImageNet init is irrelevant: every weight comes from one file
    for split in ("Train",) + EVAL_SPLITS:
        where = "DataLoader.Train" if split == "Train" else f"DataLoader.Eval.{split}"
        ds = get(cfg, f"{where}.dataset", None)
        if isinstance(ds, dict):
            ds["image_root"] = data_root
        loader = get(cfg, f"{where}.loader", None)
        if opts.num_workers is not None and isinstance(loader, dict):
            loader["num_workers"] = int(opts.num_workers)
    shape, note = resolve_image_shape(cfg, opts.image_shape)
    if note:
        notes.append(Row("setup", "image shape", "", str(shape), status=NOTE, detail=note))
    return cfg, shape, notes


def prepare_data(opts: ParityOptions, work_dir: str) -> tuple:
    """``(data_root, note)``: the user's folder, or a small synthetic Market-format set."""
    if opts.data:
        if not os.path.isdir(opts.data):
            raise DataError(f"--data {opts.data!r} is not a folder (give the dataset image_root, the folder that "
                            "holds market1501/Market-1501-v15.09.15 or msmt17/MSMT17_V1)")
        if os.path.isdir(os.path.join(opts.data, "bounding_box_test")):
            up = os.path.dirname(os.path.dirname(os.path.abspath(opts.data)))
            raise DataError(f"--data {opts.data!r} is the dataset folder itself; give its image_root (the folder "
                            f"holding market1501/Market-1501-v15.09.15, PaddleClas's image_root), e.g. --data {up}")
        return os.path.abspath(opts.data), None
    from synthreid import dataset_present, make_synthetic_reid

    root = os.path.join(work_dir, "synthetic")
    if dataset_present(root):  # a kept --work-dir: same seed and size give the same files
        return root, Row("setup", "data", "", "synthetic (reused)", status=NOTE,
                         detail=f"no --data: reused the synthetic Market-format set in {root}")
    summary = make_synthetic_reid(root, num_ids=int(opts.synthetic_ids), seed=int(opts.seed), **SYNTHETIC_DEFAULTS)
    counts = {k: v for k, v in summary.items() if k.startswith("num_")}
    return root, Row("setup", "data", "", f"synthetic, {opts.synthetic_ids} ids", status=NOTE,
                     detail=f"no --data: generated a synthetic Market-format set in {root} ({counts})")


def load_images(cfg: Dict[str, Any], num_images: int, image_shape: Sequence[int]) -> tuple:
    """``(paths, decoded, batch)`` of the first ``num_images`` query images (see ParityContext)."""
    from ..data.loader import build_dataset

    ds = build_dataset(get(cfg, "DataLoader.Eval.Query"), "DataLoader.Eval.Query")
    n = min(int(num_images), len(ds))
    if n < 1:
        raise ConfigError(f"--num-images must be >= 1, got {num_images}")
    batch = np.stack([ds[i][0] for i in range(n)]).astype(np.float32)
    if list(batch.shape[1:]) != list(image_shape):
        raise ConfigError(f"the evaluation transforms give images of shape {list(batch.shape[1:])}, "
                          f"not Global.image_shape {list(image_shape)}")
    return [ds.images[i] for i in range(n)], [np.asarray(ds.read(i)) for i in range(n)], batch


def build_context(opts: ParityOptions) -> ParityContext:
    if opts.work_dir:
        os.makedirs(opts.work_dir, exist_ok=True)
        work_dir = opts.work_dir
    else:
        work_dir = tempfile.mkdtemp(prefix="ppise_parity_")
    data_root, data_note = prepare_data(opts, work_dir)
    cfg, shape, notes = resolve_config(opts, data_root)
    if data_note:
        notes.insert(0, data_note)
    paths, decoded, batch = load_images(cfg, opts.num_images, shape)
    return ParityContext(options=opts, cfg=cfg, work_dir=work_dir, data_root=data_root, image_shape=shape,
                         notes=notes, image_paths=paths, decoded=decoded, batch=batch)


def arch_without_head(arch: Dict[str, Any]) -> Dict[str, Any]:
    """The inference branch of an Arch: backbone + stop layer + neck (what retrieval uses)."""
    out = copy.deepcopy(arch)
    out.pop("Head", None)
    return out
