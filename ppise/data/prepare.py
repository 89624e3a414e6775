"""Generate the synthetic Market-format set on first use when the config asks for it.

``Global.synthetic_dataset: {ids: 100, seed: 0}`` makes ``image_root`` self-filling: if the
folder already holds a Market-1501 layout (real or synthetic) it is used as it is, so
``-o DataLoader.*.dataset.image_root=...`` can point the same config at real data.
"""
from __future__ import annotations

from typing import Any, Dict, List

from ..config import get
from ..utils import dist
from ..utils.logger import logger


def _image_roots(cfg: Dict[str, Any]) -> List[str]:
    roots = []
    for path in ("DataLoader.Train.dataset.image_root", "DataLoader.Eval.Query.dataset.image_root", "DataLoader.Eval.Gallery.dataset.image_root"):
        root = get(cfg, path, None)
        if root and root not in roots:
            roots.append(root)
    return roots


def ensure_dataset(cfg: Dict[str, Any]) -> None:
    spec = cfg["Global"].get("synthetic_dataset")
    if not spec:
        return
    from synthreid import dataset_present, make_synthetic_reid

    if dist.is_main():
        for root in _image_roots(cfg):
            if dataset_present(root):
                continue
            logger.info(f"no dataset under {root}: generating the synthetic Market-format set ({spec})")
            options = {k: v for k, v in spec.items() if k not in ("ids", "seed")}
            summary = make_synthetic_reid(root, num_ids=int(spec.get("ids", 100)), seed=int(spec.get("seed", 0)), **options)
            logger.info(f"synthetic dataset ready: {summary}")
    dist.barrier()
