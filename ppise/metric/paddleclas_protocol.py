"""The ``paddleclas`` protocol: PaddleClas's retrieval evaluation, number for number.

Reproduces ``ppcls/engine/evaluation/retrieval.py`` (non re-ranking branch) and the ``mAP``,
``Recallk`` and ``mINP`` classes of ``ppcls/metric/metrics.py`` (PaddlePaddle/PaddleClas,
read at commits 5cc6c50c / 0375403d for retrieval.py and 4cc1b004 / 01339105 for
metrics.py; the logic below is the same in all four). What PaddleClas does, per block of
``sim_block_size`` queries:

1. ``sim = q_block @ gallery.T`` in float32.
2. ``keep = (q_id != g_id) | (q_cam != g_cam)``; ``sim *= keep``: same-id-same-camera
   pairs are **zeroed, not removed**. They stay in the ranking with similarity 0, so they
   push down every true match whose similarity is negative. Junk (-1) and distractors are
   ordinary negatives (PaddleClas has no junk notion). Without cameras nothing is masked.
3. Rank by descending ``sim``; a positive is ``g_id == q_id and keep``.
4. Queries with no positive are dropped *inside the block* for every metric:
   mAP_b = mean AP of the block's valid queries (NaN if none);
   recall{k}_b = (#valid queries whose first positive is within the top k) / #valid (NaN if
   none); mINP_b likewise.
5. ``metric = sum_b metric_b * B_b / Q``: blocks are weighted by their *size*, not by
   their number of valid queries, so the result depends on the block size whenever some
   queries have no positive.

AP is the mean of precision@hit over the positives (precision counted over the full,
zero-padded ranking, i.e. positions are gallery indices + 1).

mINP quirk: PaddleClas takes ``hard_index = argmax(flag - flag / (j + 2))`` (0-based index
of the last positive) and divides by it, not by its 1-based rank: INP_upstream =
#positives / hard_index (> 1, or inf when the last positive is at rank 1). The float32
subtraction also collapses late indices (1 - 1/(j+2) stops changing), and argmax returns the
first maximum. Newer metrics.py (01339105) additionally crashes with a camera mask
(``paddle.indechmx_sample`` typo). We report ``mINP_upstream`` with that exact formula and
``mINP`` with the intended one (#positives / rank of the last positive) under the same
block/valid-query rules.

recall@k for k > G: PaddleClas raises IndexError (``all_cmc[k - 1]``); we return the
saturated CMC value (= recall@G), which is what the curve means.

Tie order: PaddleClas uses ``paddle.argsort`` (not stable, kernel-dependent); we break ties
by gallery order with a stable sort. With continuous features ties only occur among the
zeroed (never positive) entries, where order does not change any metric.
Arithmetic is float64 here; PaddleClas's float32 arithmetic differs by ~1e-7.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np


def _upstream_hard_index(rows: np.ndarray, cols: np.ndarray, starts: np.ndarray,
                         num_pos: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """PaddleClas's ``argmax(flag - flag / (j + 2))`` in float32, for the valid rows."""
    one = np.float32(1.0)
    aux = one - one / (cols.astype(np.float32) + np.float32(2.0))  # non-decreasing in j
    last = starts[valid] + num_pos[valid] - 1
    row_max = np.zeros(num_pos.size, dtype=np.float32)
    row_max[valid] = aux[last]
    is_max = aux == row_max[rows]
    # First hit of each row reaching the row's maximum (argmax returns the first maximum).
    cand = np.flatnonzero(is_max)
    first_idx = np.full(num_pos.size, -1, dtype=np.int64)
    first_idx[rows[cand][::-1]] = cand[::-1]
    return cols[first_idx[valid]]


def paddleclas_block_metrics(sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray,
                             q_cams: Optional[np.ndarray], g_cams: Optional[np.ndarray],
                             topk: Sequence[int]) -> Dict[str, float]:
    """Metrics of one query block, exactly as PaddleClas computes them before weighting.

    ``sim`` is the raw float32 [B, G] similarity of the block. Returns ``mAP``,
    ``recall{k}``, ``mINP``, ``mINP_upstream`` (NaN when the block has no valid query) and
    ``num_valid``.
    """
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

    out: Dict[str, float] = {"num_valid": num_valid}
    if num_valid == 0:
        out.update({"mAP": float("nan"), "mINP": float("nan"), "mINP_upstream": float("nan")})
        out.update({f"recall{k}": float("nan") for k in topk})
        return out
    npos = num_pos[valid].astype(np.float64)
    first = cols[starts[valid]]
    last = cols[starts[valid] + num_pos[valid] - 1]
    hard = _upstream_hard_index(rows, cols, starts, num_pos, valid).astype(np.float64)
    with np.errstate(divide="ignore"):
        inp_upstream = npos / hard
    out["mAP"] = float(np.mean(ap_sum[valid] / npos))
    for k in topk:
        out[f"recall{k}"] = float(np.count_nonzero(first < k) / num_valid)
    out["mINP"] = float(np.mean(npos / (last + 1.0)))
    out["mINP_upstream"] = float(np.mean(inp_upstream))
    return out
