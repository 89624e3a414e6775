"""PaddleClas's retrieval evaluation, re-implemented independently of ``ppise.metric``: the one
reference the parity check and tests/test_metric.py hold ppise's ``paddleclas`` protocol to.

Written from PaddleClas's ``ppcls/engine/evaluation/retrieval.py`` (non re-ranking branch) and
the ``mAP``, ``Recallk`` and ``mINP`` layers of ``ppcls/metric/metrics.py`` in their dense form
(sort every row, gather labels, cumulative sums) with PaddleClas's float32 arithmetic. The
product goes another route (sparse hit positions, float64), so agreement is evidence, not
tautology; the rules themselves are listed in ``ppise.metric.paddleclas_protocol``. ``mINP`` is
upstream's (divided by the 0-based index of the last hit, infinite when that is 0);
``mINP_intended`` divides by its 1-based rank, which ppise reports as ``mINP``. Only k > gallery
size departs: PaddleClas raises IndexError, this returns the last CMC value.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

F32 = np.float32


def block_sections(num: int, block_size: int) -> List[int]:
    """PaddleClas's ``sections``: full blocks, then the remainder if any."""
    sections = [block_size] * (num // block_size)
    if num % block_size:
        sections.append(num % block_size)
    return sections


def block_metrics(sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, q_cams: Optional[np.ndarray],
                  g_cams: Optional[np.ndarray], topk: Sequence[int]) -> Dict[str, float]:
    """mAP, mINP, mINP_intended and recall@k of one query block, before block weighting."""
    sim = np.asarray(sim, F32)
    keep = None
    if q_cams is not None and g_cams is not None:
        keep = (q_ids[:, None] != g_ids[None, :]) | (q_cams[:, None] != g_cams[None, :])
        sim = keep.astype(F32) * sim
    order = np.argsort(-sim, axis=1, kind="stable")  # descending similarity
    hits = g_ids[order] == q_ids[:, None]
    if keep is not None:
        hits &= np.take_along_axis(keep, order, axis=1)
    hits = hits.astype(F32)  # PaddleClas's equal_flag: 1 where the rank-j gallery item is a hit
    found = (np.cumsum(hits, axis=1, dtype=F32) > 0).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmc = found.sum(axis=0, dtype=F32) / F32(np.sum(hits.sum(axis=1) > 0))
    recall = {f"recall{k}": float(cmc[min(int(k), cmc.size) - 1]) for k in topk}
    h = hits[hits.sum(axis=1) > 0]  # PaddleClas drops the queries without a hit
    if not len(h):
        return {"mAP": float("nan"), "mINP": float("nan"), "mINP_intended": float("nan"), **recall}
    j = np.arange(h.shape[1], dtype=F32)
    num_hits = h.sum(axis=1, dtype=F32)
    precision = np.cumsum(h, axis=1, dtype=F32) / (j + F32(1))
    hard = np.argmax(h - h / (j + F32(2)), axis=1).astype(F32)
    last_rank = h.shape[1] - np.argmax(h[:, ::-1], axis=1)
    with np.errstate(divide="ignore"):
        inp = num_hits / hard
    return {"mAP": float(np.mean((h * precision).sum(axis=1, dtype=F32) / num_hits, dtype=F32)),
            "mINP": float(np.mean(inp, dtype=F32)),
            "mINP_intended": float(np.mean(h.sum(axis=1, dtype=np.float64) / last_rank)), **recall}


def _labels(x: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return None if x is None else np.asarray(x).reshape(-1).astype(np.int64)


def paddleclas_retrieval_metrics(query_feats: np.ndarray, gallery_feats: np.ndarray, query_ids: np.ndarray,
                                 gallery_ids: np.ndarray, query_cams: Optional[np.ndarray] = None,
                                 gallery_cams: Optional[np.ndarray] = None, topk: Sequence[int] = (1, 5),
                                 block_size: int = 64) -> Dict[str, float]:
    """The numbers PaddleClas's retrieval evaluation prints for these (already normalised) features."""
    qf, gf = np.asarray(query_feats, F32), np.asarray(gallery_feats, F32)
    qid, gid, qcam, gcam = (_labels(x) for x in (query_ids, gallery_ids, query_cams, gallery_cams))
    totals: Dict[str, float] = {}
    start = 0
    for size in block_sections(qf.shape[0], int(block_size)):
        rows = slice(start, start + size)
        start += size
        block = block_metrics(qf[rows] @ gf.T, qid[rows], gid, None if qcam is None else qcam[rows], gcam, topk)
        for key, value in block.items():
            totals[key] = totals.get(key, 0.0) + value * size / qf.shape[0]
    return totals
