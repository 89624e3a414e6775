"""The ``market`` protocol: the evaluation behind published re-ID numbers.

Per query (as in fast-reid / torchreid ``eval_market1501`` and open-reid's Market settings):

* rank the gallery by descending similarity (dot product of the given features);
  ties keep gallery order (stable sort), so results never depend on the sort kernel;
* drop from the ranking every gallery image with the query's id **and** camera, and every
  junk image (id -1); the remaining images form the query's ranking (positions 1, 2, ...);
* a *true match* is a remaining image with the query's id; queries with none are skipped;
* AP = mean over true matches of precision@(rank of that match);
* CMC hit@k = 1 if the first true match is at rank <= k;
* INP = (number of true matches) / (rank of the last true match)   (Ye et al. 2021).

Distractors (e.g. Market id 0) are ordinary non-matching gallery images.
Everything is vectorised over a block of queries: one argsort + cumulative sums.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

JUNK_ID = -1


def market_block_stats(sim: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray,
                       q_cams: np.ndarray, g_cams: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-query AP, first-hit rank and INP for one block of queries.

    ``sim`` is [B, G]. Returns arrays of length B: ``valid`` (bool: has a true match),
    ``ap``, ``inp`` (0 where not valid) and ``first_rank`` (1-based; a huge value where not
    valid, so ``first_rank <= k`` is simply False).
    """
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
