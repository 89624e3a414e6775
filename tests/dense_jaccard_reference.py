"""Straightforward dense k-reciprocal Jaccard distance: the definition, loop by loop.

This is the baseline the sparse ``ppise.cluster`` code must match (tests) and beat
(benchmarks/bench_pseudo_label.py). It keeps three dense N x N matrices and loops over
samples in Python, like the widely used reference, so use it only for small N.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def dense_rank(x: np.ndarray, k: int) -> np.ndarray:
    """k nearest neighbours by L2 on unit rows (full distance matrix + stable sort), self first."""
    d = 2.0 - 2.0 * (x.astype(np.float64) @ x.astype(np.float64).T)
    np.fill_diagonal(d, -1.0)  # the point itself comes first, even against duplicates
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def _k_reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, : k + 1]
    back = rank[forward, : k + 1]
    return forward[(back == i).any(axis=1)]


def dense_jaccard(x: np.ndarray, k1: int = 30, k2: int = 6, rank: Optional[np.ndarray] = None) -> np.ndarray:
    """Dense N x N Jaccard distance of unit rows ``x`` (rank from ``dense_rank`` unless given)."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if rank is None:
        rank = dense_rank(x, min(k1, n))
    half = int(np.around(k1 / 2))
    r_full = [_k_reciprocal(rank, i, k1) for i in range(n)]
    r_half = [_k_reciprocal(rank, i, half) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        members = set(r_full[i].tolist())
        expanded = set(members)
        for c in r_full[i]:
            cand = r_half[c]
            if len(members.intersection(cand.tolist())) > 2 / 3 * len(cand):
                expanded.update(cand.tolist())
        cols = np.array(sorted(expanded))
        dist = 2.0 - 2.0 * (x[i].astype(np.float64) @ x[cols].astype(np.float64).T)
        w = np.exp(-(dist - dist.min()))
        v[i, cols] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    postings = [np.flatnonzero(v[:, c]) for c in range(n)]  # inverted index: who uses column c
    d = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        m = np.zeros(n, dtype=np.float64)
        for c in np.flatnonzero(v[i]):
            m[postings[c]] += np.minimum(v[i, c], v[postings[c], c])
        d[i] = 1.0 - m / (2.0 - m)
    d[d < 0] = 0.0
    np.fill_diagonal(d, 0.0)
    return d
