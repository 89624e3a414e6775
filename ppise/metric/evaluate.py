"""``evaluate``: check inputs, walk query blocks, dispatch to a protocol, aggregate.

Queries go ``block_size`` at a time, so only a [block, G] similarity matrix lives at once
(MSMT17 is 11,659 x 82,161).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, DataError
from ..utils.logger import logger
from .market_protocol import market_block_stats
from .paddleclas_protocol import paddleclas_block_metrics

PROTOCOLS = ("market", "paddleclas")
DEFAULT_TOPK = (1, 5, 10)


class MetricInputError(DataError, ValueError):
    """Features/labels that cannot be evaluated together (a DataError and a ValueError)."""


def _as_numpy(x: Any) -> np.ndarray:
    """Numpy arrays, lists and paddle tensors (which expose ``.numpy()``)."""
    return np.asarray(x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else x)


def _labels(x: Any, name: str, n: int, feats_name: str) -> np.ndarray:
    arr = _as_numpy(x)
    if arr.ndim == 2 and arr.shape[1] == 1:  # PaddleClas keeps labels as [N, 1]
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise MetricInputError(f"{name} must be 1-D (or [N, 1]), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise MetricInputError(f"{name} has {arr.shape[0]} entries but {feats_name} has {n} rows")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise MetricInputError(f"{name} must hold integers, got non-integral values")
    elif arr.dtype.kind not in "iub":
        raise MetricInputError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _features(x: Any, name: str) -> np.ndarray:
    arr = _as_numpy(x)
    if arr.ndim != 2:
        raise MetricInputError(f"{name} must be a 2-D [N, D] array, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise MetricInputError(f"{name} is empty: nothing to evaluate")
    arr = arr.astype(np.float32, copy=False)  # PaddleClas ranks float32 similarities
    if not np.all(np.isfinite(arr)):
        raise MetricInputError(f"{name} contains NaN or Inf (did training diverge?)")
    return arr


def _check_topk(topk: Sequence[int]) -> Tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in topk)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"Metric.Eval Recallk.topk must be a list of ints, got {topk!r}") from err
    if not ks or any(k < 1 for k in ks) or any(int(k) != k for k in topk):
        raise ConfigError(f"Metric.Eval Recallk.topk must be positive ints, got {topk!r}")
    return tuple(sorted(set(ks)))


def _market(qf, gf, qid, gid, qcam, gcam, topk, block_size) -> Dict[str, Any]:
    if qcam is None or gcam is None:
        raise MetricInputError("the market protocol needs query_cams and gallery_cams (same-id-same-camera "
                               "removal); pass cameras or use Global.eval_protocol=paddleclas")
    blocks = [slice(i, i + block_size) for i in range(0, qf.shape[0], block_size)]
    parts = [market_block_stats(qf[s] @ gf.T, qid[s], gid, qcam[s], gcam) for s in blocks]
    stats = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    valid = stats["valid"]
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise MetricInputError(f"none of the {qf.shape[0]} queries has a true match in the gallery once "
                               "same-id-same-camera and junk (-1) images are removed: check query/gallery "
                               "ids and cameras")
    if num_valid < qf.shape[0]:
        logger.warning(f"market protocol: {qf.shape[0] - num_valid} of {qf.shape[0]} "
                       "queries have no valid gallery match and were skipped")
    first = stats["first_rank"][valid]
    out: Dict[str, Any] = {"mAP": float(stats["ap"][valid].mean())}
    out.update({f"rank{k}": float(np.count_nonzero(first <= k) / num_valid) for k in topk})
    return {**out, "mINP": float(stats["inp"][valid].mean()), "num_valid_query": num_valid}


def _paddleclas(qf, gf, qid, gid, qcam, gcam, topk, block_size) -> Dict[str, Any]:
    num_q = qf.shape[0]
    keys = ["mAP"] + [f"rank{k}" for k in topk] + ["mINP", "mINP_upstream"]
    out: Dict[str, Any] = dict.fromkeys(keys, 0.0)
    num_valid = 0
    for s in [slice(i, i + block_size) for i in range(0, num_q, block_size)]:
        q_cams = None if qcam is None else qcam[s]
        block = paddleclas_block_metrics(qf[s] @ gf.T, qid[s], gid, q_cams, gcam, topk)
        num_valid += block["num_valid"]
        for key in out:
            out[key] += block[key] * len(qid[s]) / num_q  # PaddleClas: weight = block size / Q
    if num_valid < num_q:
        logger.warning(f"paddleclas protocol: {num_q - num_valid} of {num_q} queries have "
                       "no positive; PaddleClas drops them inside their block but still "
                       "weights blocks by size")
    return {**out, "num_valid_query": num_valid}


def evaluate(query_feats: Any, gallery_feats: Any, query_ids: Any, gallery_ids: Any,
             query_cams: Optional[Any] = None, gallery_cams: Optional[Any] = None,
             protocol: str = "market", topk: Sequence[int] = DEFAULT_TOPK,
             block_size: int = 64) -> Dict[str, Any]:
    """Retrieval metrics of query vs gallery features (dot product: L2-normalise for cosine).

    Fractions in [0, 1]: ``mAP``, ``rank{k}``, ``mINP`` (and ``mINP_upstream`` for ``paddleclas``),
    plus ``protocol``, ``num_query``, ``num_gallery``, ``num_valid_query``.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"Global.eval_protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ConfigError(f"Global.sim_block_size must be a positive int, got {block_size!r}")
    ks = _check_topk(topk)
    qf = _features(query_feats, "query_feats")
    gf = _features(gallery_feats, "gallery_feats")
    if qf.shape[1] != gf.shape[1]:
        raise MetricInputError(f"query_feats has dimension {qf.shape[1]} but gallery_feats has {gf.shape[1]}")
    qid = _labels(query_ids, "query_ids", qf.shape[0], "query_feats")
    gid = _labels(gallery_ids, "gallery_ids", gf.shape[0], "gallery_feats")
    if (query_cams is None) != (gallery_cams is None):
        raise MetricInputError("query_cams and gallery_cams must be given together")
    qcam = None if query_cams is None else _labels(query_cams, "query_cams", qf.shape[0], "query_feats")
    gcam = None if gallery_cams is None else _labels(gallery_cams, "gallery_cams", gf.shape[0], "gallery_feats")

    run = _market if protocol == "market" else _paddleclas
    out = run(qf, gf, qid, gid, qcam, gcam, ks, int(block_size))
    return {**out, "protocol": protocol, "num_query": int(qf.shape[0]), "num_gallery": int(gf.shape[0])}
