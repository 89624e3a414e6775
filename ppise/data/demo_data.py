"""The demo's synthetic data set (``Global.synthetic_dataset: {ids, seed, root, ...}``), made on
first use only at its own ``root`` (default ``./dataset/synthetic_demo``): a mistyped
``image_root`` fails instead of training on invented data. A demo run may start over."""
from __future__ import annotations

import os
from typing import Any, Dict, List

from ..config import get
from ..errors import ConfigError
from ..utils import dist
from ..utils.logger import logger

DEMO_ROOT = "./dataset/synthetic_demo"
_SPEC_KEYS = ("ids", "seed", "root")


def _image_roots(cfg: Dict[str, Any]) -> List[str]:
    sections = ("Train", "Eval.Query", "Eval.Gallery")
    roots = (get(cfg, f"DataLoader.{s}.dataset.image_root", None) for s in sections)
    return list(dict.fromkeys(r for r in roots if r))


def _same(a: str, b: str) -> bool:
    full_a, full_b = (os.path.abspath(os.path.expanduser(str(p))) for p in (a, b))
    return full_a == full_b


def demo_root(cfg: Dict[str, Any]) -> str:
    """Where the demo data is (to be) generated: ``Global.synthetic_dataset.root`` or the default."""
    spec = cfg["Global"].get("synthetic_dataset") or {}
    root = spec.get("root", DEMO_ROOT)
    if not isinstance(root, str) or not root:
        raise ConfigError(f"Global.synthetic_dataset.root={root!r} must be a folder path (default {DEMO_ROOT})")
    return root


def is_demo_run(cfg: Dict[str, Any]) -> bool:
    """True when the config asks for the synthetic set and every image_root is its location."""
    if not cfg["Global"].get("synthetic_dataset"):
        return False
    roots = _image_roots(cfg)
    return bool(roots) and all(_same(r, demo_root(cfg)) for r in roots)


def ensure_dataset(cfg: Dict[str, Any]) -> None:
    """Generate the synthetic set at the demo's location when it is missing there."""
    spec = cfg["Global"].get("synthetic_dataset")
    if not spec:
        return
    from synthreid import dataset_present, make_synthetic_reid

    target = demo_root(cfg)
    if dist.is_main():
        for root in _image_roots(cfg):
            if dataset_present(root) or not _same(root, target):
                continue  # data there, or not the demo's location: the dataset itself says what is missing
            logger.info(f"no dataset under {root}: generating the synthetic Market-format set ({spec})")
            options = {k: v for k, v in spec.items() if k not in _SPEC_KEYS}
            summary = make_synthetic_reid(root, num_ids=int(spec.get("ids", 100)), seed=int(spec.get("seed", 0)), **options)
            logger.info(f"synthetic dataset ready: {summary}")
    dist.barrier()
