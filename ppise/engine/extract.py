"""Feature extraction in eval mode, sharded over ranks and gathered in dataset order."""
from __future__ import annotations

import time
from typing import Dict

import numpy as np

from ..utils import dist
from ..utils.arrays import l2_normalize
from ..utils.device import extraction_threads
from ..utils.logger import logger


def extract_features(model, loader, normalize: bool = True, desc: str = "features", output_key: str = "features",
                     amp=None) -> Dict[str, np.ndarray]:
    """Run ``model`` over ``loader`` (under ``amp``'s eval autocast); float32 feats/pids/cams/idx
    in dataset order, each image once (the padding that evens out the ranks' shards dropped)."""
    import paddle

    from .amp import autocast, to_float32

    was_training = model.training
    model.eval()
    feats, pids, cams, idxs = [], [], [], []
    start = time.time()
    total = len(loader)
    with paddle.no_grad(), extraction_threads(), autocast(amp, is_eval=True):
        for i, (images, pid, cam, idx) in enumerate(loader):
            out = model(images)
            feat = to_float32(out[output_key] if isinstance(out, dict) else out)
            feats.append(feat.reshape([feat.shape[0], -1]).numpy().astype(np.float32))
            pids.append(np.asarray(pid).reshape(-1))
            cams.append(np.asarray(cam).reshape(-1))
            idxs.append(np.asarray(idx).reshape(-1))
            if (i + 1) % 50 == 0 or i + 1 == total:
                logger.info(f"extract {desc}: batch {i + 1}/{total} ({time.time() - start:.1f}s)")
    if was_training:
        model.train()
    local = {"feats": np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)}
    for key, parts in (("pids", pids), ("cams", cams), ("idx", idxs)):
        local[key] = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    merged = {k: np.concatenate(dist.all_gather_object(v)) for k, v in local.items()}
    _, first = np.unique(merged["idx"], return_index=True)  # drop shard padding, sort by index
    result = {k: v[first] for k, v in merged.items()}
    if normalize:
        result["feats"] = l2_normalize(result["feats"])
    return result
