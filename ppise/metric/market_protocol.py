"""The ``market`` protocol behind published re-ID numbers (fast-reid / torchreid ``eval_market1501``).

Per query: rank the gallery by descending similarity (stable: ties keep gallery order); drop
every image with the query's id **and** camera and every junk image (id -1); a true match is a
remaining image of the query's id (queries without one are skipped). AP is the mean precision
at the true matches, CMC hit@k is first match at rank <= k, INP = #matches / rank of the last.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

JUNK_ID = -1


def market_block_stats(sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray,
                       q_cams: np.ndarray, g_cams: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-query ``valid`` (has a true match), ``ap``, ``inp`` (0 where not valid) and 1-based
    ``first_rank`` (huge where not valid, so ``first_rank <= k`` is False) of a [B, G] ``sim``."""
    num_q = sim.shape[0]
    # Stable descending order; "+ 0.0" turns -0.0 into +0.0 so signed zeros tie.
    order = np.argsort(-(sim + sim.dtype.type(0.0)), axis=1, kind="stable")
    # Masks are built in gallery order (cheap broadcasts) and then permuted as bytes.
    same_id = q_ids[:, None] == g_ids[None, :]
    kept = ~(same_id & (q_cams[:, None] == g_cams[None, :])) & (g_ids != JUNK_ID)[None, :]
    match = np.take_along_axis(same_id & kept, order, axis=1)
    kept = np.take_along_axis(kept, order, axis=1)
    # 1-based position of every kept entry inside the query's filtered ranking.
    position = np.cumsum(kept, axis=1, dtype=np.int32)

    rows, cols = np.nonzero(match)  # row-major: hits of each query, best first
    num_pos = np.bincount(rows, minlength=num_q)
    valid = num_pos > 0
    hit_pos = position[rows, cols].astype(np.float64)
    starts = np.concatenate(([0], np.cumsum(num_pos)[:-1]))
    hit_count = np.arange(rows.size) - starts[rows] + 1  # j-th hit of its query
    ap_sum = np.bincount(rows, weights=hit_count / hit_pos, minlength=num_q)

    ap = np.zeros(num_q, dtype=np.float64)
    inp = np.zeros(num_q, dtype=np.float64)
    first_rank = np.full(num_q, np.iinfo(np.int64).max, dtype=np.int64)
    ap[valid] = ap_sum[valid] / num_pos[valid]
    first_rank[valid] = hit_pos[starts[valid]].astype(np.int64)
    last_pos = hit_pos[starts[valid] + num_pos[valid] - 1]
    inp[valid] = num_pos[valid] / last_pos
    return {"valid": valid, "ap": ap, "inp": inp, "first_rank": first_rank}
