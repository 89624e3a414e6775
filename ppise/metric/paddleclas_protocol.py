"""The ``paddleclas`` protocol: PaddleClas's retrieval evaluation, number for number.

From ``ppcls/engine/evaluation/retrieval.py`` (non re-ranking branch) and the ``mAP``,
``Recallk`` and ``mINP`` classes of ``ppcls/metric/metrics.py`` (commits 5cc6c50c / 0375403d
and 4cc1b004 / 01339105, the same logic in all four), per block of ``sim_block_size`` queries:
same-id-same-camera pairs get similarity 0 and **stay ranked** (they push down every match with
a negative similarity); junk (-1) is an ordinary negative; queries without a positive are
dropped inside their block (a block without any is NaN); blocks weigh by their *size*, so
results depend on the block size. AP counts positions over the whole zero-padded ranking.

mINP: PaddleClas divides #positives by ``argmax(flag - flag / (j + 2))``, the 0-based index of
the last positive (inf when it is 0; float32 makes late indices collide and argmax takes the
first): that is ``mINP_upstream``; ``mINP`` divides by its 1-based rank, as intended.
recall@k for k > G saturates where PaddleClas raises IndexError. Ties break by gallery order
(PaddleClas's unstable argsort only reorders zeroed non-positives). float64 here: ~1e-7 off.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np


def _upstream_hard_index(cols: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """PaddleClas's ``argmax(flag - flag / (j + 2))`` in float32, per query with a positive.

    ``cols`` are the positives' 0-based indices, grouped by query (``starts``, ``counts``);
    the value is non-decreasing in j, so argmax is the first positive equal to the last one's.
    """
    one = np.float32(1.0)
    aux = one - one / (cols.astype(np.float32) + np.float32(2.0))
    at_max = aux == np.repeat(aux[starts + counts - 1], counts)
    return np.minimum.reduceat(np.where(at_max, cols, cols.max()), starts)


def paddleclas_block_metrics(sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray,
                             q_cams: Optional[np.ndarray], g_cams: Optional[np.ndarray],
                             topk: Sequence[int]) -> Dict[str, float]:
    """``mAP``, ``rank{k}``, ``mINP``, ``mINP_upstream`` (NaN without a valid query) and
    ``num_valid`` of one block (raw float32 [B, G] ``sim``), as PaddleClas has them before weighting."""
    num_q = sim.shape[0]
    same_id = q_ids[:, None] == g_ids[None, :]
    if q_cams is not None and g_cams is not None:
        keep = ~same_id | (q_cams[:, None] != g_cams[None, :])
        sim = sim * keep.astype(sim.dtype)
    else:
        keep = None
    order = np.argsort(-(sim + sim.dtype.type(0.0)), axis=1, kind="stable")
    flag = np.take_along_axis(same_id, order, axis=1)
    if keep is not None:
        flag &= np.take_along_axis(keep, order, axis=1)

    rows, cols = np.nonzero(flag)
    num_pos = np.bincount(rows, minlength=num_q)
    valid = num_pos > 0
    num_valid = int(valid.sum())
    starts = np.concatenate(([0], np.cumsum(num_pos)[:-1]))
    hit_count = np.arange(rows.size) - starts[rows] + 1
    ap_sum = np.bincount(rows, weights=hit_count / (cols + 1.0), minlength=num_q)

    if num_valid == 0:
        keys = ["mAP"] + [f"rank{k}" for k in topk] + ["mINP", "mINP_upstream"]
        return {**dict.fromkeys(keys, float("nan")), "num_valid": 0}
    npos = num_pos[valid].astype(np.float64)
    first = cols[starts[valid]]
    last = cols[starts[valid] + num_pos[valid] - 1]
    hard = _upstream_hard_index(cols, starts[valid], num_pos[valid]).astype(np.float64)
    with np.errstate(divide="ignore"):
        inp_upstream = npos / hard
    out: Dict[str, float] = {"mAP": float(np.mean(ap_sum[valid] / npos))}
    out.update({f"rank{k}": float(np.count_nonzero(first < k) / num_valid) for k in topk})
    out.update(mINP=float(np.mean(npos / (last + 1.0))), mINP_upstream=float(np.mean(inp_upstream)))
    return {**out, "num_valid": num_valid}
