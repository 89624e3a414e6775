"""PaddleClas's retrieval evaluation, re-implemented independently of ``ppise.metric``.

The one reference for ppise's ``paddleclas`` protocol: the parity check and the tests
(tests/test_metric.py) compare ``ppise.metric.evaluate`` with it.

Written from PaddleClas's ``ppcls/engine/evaluation/retrieval.py`` (non re-ranking branch)
and the ``mAP``, ``Recallk`` and ``mINP`` layers of ``ppcls/metric/metrics.py``, in their
dense form (sort every row, gather labels, cumulative sums), with PaddleClas's float32
arithmetic. ppise's ``paddleclas`` protocol computes the same numbers by another route
(sparse positive positions, float64), so agreement is evidence, not tautology.

What PaddleClas does, and so what this does:

* queries are split into blocks of ``Global.sim_block_size`` (default 64), the last one
  holding the remainder;
* per block, ``sim = q @ g.T``; with cameras, ``keep = (q_id != g_id) | (q_cam != g_cam)``
  and ``sim = keep * sim`` (same-id-same-camera pairs get similarity 0 and stay ranked);
* rows are sorted by descending similarity; a hit is ``g_id == q_id`` and kept;
* mAP: mean over queries with at least one hit of sum(hit * precision@rank) / #hits;
* recall@k: ``cmc[k-1]`` with ``cmc = (#rows whose cumulative hits > 0 at each rank) / #queries
  with a hit``;
* mINP: ``#hits / argmax(hit - hit / (j + 2))`` (j the 0-based rank), i.e. divided by the
  0-based index of the last hit, as upstream computes it (infinite when that index is 0);
* block values are summed with weight ``block size / #queries``.

``mINP_intended`` adds the formula mINP is meant to have (#hits / 1-based rank of the last
hit) under the same block rules; ppise reports it as ``mINP``.

Only the k > gallery-size case departs: PaddleClas raises IndexError there, this returns
the last CMC value (recall over the whole gallery).
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


def _hit_matrix(sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, keep: Optional[np.ndarray]) -> np.ndarray:
    """``equal_flag`` of PaddleClas: [B, G] float32, 1 where the rank-j gallery item is a hit."""
    order = np.argsort(-sim, axis=1, kind="stable")  # descending similarity
    hits = g_ids[order] == q_ids[:, None]
    if keep is not None:
        hits &= np.take_along_axis(keep, order, axis=1)
    return hits.astype(F32)


def _map(hits: np.ndarray) -> float:
    rel = hits.sum(axis=1) > 0
    if not rel.any():
        return float("nan")
    h = hits[rel]
    precision = np.cumsum(h, axis=1, dtype=F32) / (np.arange(h.shape[1], dtype=F32) + F32(1))
    ap = (h * precision).sum(axis=1, dtype=F32) / h.sum(axis=1, dtype=F32)
    return float(np.mean(ap, dtype=F32))


def _recall(hits: np.ndarray, topk: Sequence[int]) -> Dict[str, float]:
    real = F32(np.sum(hits.sum(axis=1) > 0))
    found = (np.cumsum(hits, axis=1, dtype=F32) > 0).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmc = found.sum(axis=0, dtype=F32) / real
    return {f"recall{k}": float(cmc[min(int(k), cmc.size) - 1]) for k in topk}


def _minp(hits: np.ndarray) -> Dict[str, float]:
    """PaddleClas's mINP (divided by the 0-based index of the last hit) and the intended one."""
    rel = hits.sum(axis=1) > 0
    if not rel.any():
        return {"mINP": float("nan"), "mINP_intended": float("nan")}
    h = hits[rel]
    aux = h - h / (np.arange(h.shape[1], dtype=F32) + F32(2))
    hard = np.argmax(aux, axis=1).astype(F32)
    last_rank = h.shape[1] - np.argmax(h[:, ::-1], axis=1)
    with np.errstate(divide="ignore"):
        inp = h.sum(axis=1, dtype=F32) / hard
    intended = h.sum(axis=1, dtype=np.float64) / last_rank
    return {"mINP": float(np.mean(inp, dtype=F32)), "mINP_intended": float(np.mean(intended))}


def block_metrics(sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, q_cams: Optional[np.ndarray],
                  g_cams: Optional[np.ndarray], topk: Sequence[int]) -> Dict[str, float]:
    """mAP, recall@k, mINP and mINP_intended of one query block, before block weighting."""
    sim = np.asarray(sim, F32)
    keep = None
    if q_cams is not None and g_cams is not None:
        keep = (q_ids[:, None] != g_ids[None, :]) | (q_cams[:, None] != g_cams[None, :])
        sim = keep.astype(F32) * sim
    hits = _hit_matrix(sim, q_ids, g_ids, keep)
    out = {"mAP": _map(hits), **_minp(hits)}
    out.update(_recall(hits, topk))
    return out


def paddleclas_retrieval_metrics(query_feats: np.ndarray, gallery_feats: np.ndarray, query_ids: np.ndarray,
                                 gallery_ids: np.ndarray, query_cams: Optional[np.ndarray] = None,
                                 gallery_cams: Optional[np.ndarray] = None, topk: Sequence[int] = (1, 5),
                                 block_size: int = 64) -> Dict[str, float]:
    """The numbers PaddleClas's retrieval evaluation prints for these (already normalised) features."""
    qf = np.asarray(query_feats, F32)
    gf = np.asarray(gallery_feats, F32)
    qid = np.asarray(query_ids).reshape(-1).astype(np.int64)
    gid = np.asarray(gallery_ids).reshape(-1).astype(np.int64)
    qcam = None if query_cams is None else np.asarray(query_cams).reshape(-1).astype(np.int64)
    gcam = None if gallery_cams is None else np.asarray(gallery_cams).reshape(-1).astype(np.int64)
    num_q = qf.shape[0]
    totals: Dict[str, float] = {}
    start = 0
    for size in block_sections(num_q, int(block_size)):
        rows = slice(start, start + size)
        start += size
        block = block_metrics(qf[rows] @ gf.T, qid[rows], gid, None if qcam is None else qcam[rows], gcam, topk)
        for key, value in block.items():
            totals[key] = totals.get(key, 0.0) + value * size / num_q
    return totals
