"""Sparse k-reciprocal Jaccard distance (DESIGN.md section 3), vectorised with scipy.sparse.

Same answer as cluster contrast's ``compute_jaccard_distance`` but every N x N object is
sparse with O(N*k) entries and no Python loop runs over samples. Details reproduced
from the reference:

* ``rank`` holds k1 columns, the point itself first (the reference searches k1
  neighbours, so its ``rank[i, :k1+1]`` slice has k1 entries, self included);
* R(i, k) = {j in rank[i, :k+1] : i in rank[j, :k+1]}, columns capped at k1;
* expansion with k = int(np.around(k1 / 2)) and the strict ``overlap > 2/3 * size`` rule;
* softmax of -(2 - 2 f_i.f_j) over R*(i); query expansion = mean of the V rows of
  rank[i, :k2] (skipped when k2 == 1); m = sum of min over shared support,
  d = 1 - m / (2 - m), clipped at 0.

Deviations, all documented: N < k1 caps the rank length at N (so every set is over the
N points there are); a duplicate listed before the point itself is moved after it; the
diagonal is stored as an exact 0 (the reference's float32 sums leave ~1e-7 there).
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from ppise.errors import ConfigError
from ppise.cluster.features import check_features
from ppise.cluster.knn import knn_search

# Pairs generated per chunk of the min-sum: bounds the transient memory (~40 bytes a pair).
_PAIR_CHUNK = 1 << 23


def _binary(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    data = np.ones(rows.size, dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n, n))


def _reciprocal(rank: np.ndarray, width: int) -> sp.csr_matrix:
    """Binary N x N: row i is R(i, width - 1), i.e. mutual membership in the first ``width`` columns."""
    n = rank.shape[0]
    w = min(width, rank.shape[1])
    a = _binary(np.repeat(np.arange(n), w), rank[:, :w].ravel(), n)
    mutual = a.multiply(a.T).tocsr()
    mutual.sort_indices()
    return mutual


def _expanded_sets(rank: np.ndarray, k1: int) -> sp.csr_matrix:
    """Binary N x N: row i is R*(i), the k-reciprocal set with its 2/3-rule expansion."""
    n = rank.shape[0]
    full = _reciprocal(rank, k1 + 1)
    half = _reciprocal(rank, int(np.around(k1 / 2)) + 1)
    # overlap[i, c] = |R(c, k1/2) & R(i, k1)|, read only where c is in R(i, k1)
    overlap = full.multiply(full @ half.T).tocoo()
    half_size = np.diff(half.indptr).astype(np.float64)
    keep = overlap.data > 2 / 3 * half_size[overlap.col]
    accepted = _binary(overlap.row[keep], overlap.col[keep], n)
    expanded = (full + accepted @ half).tocsr()
    expanded.sort_indices()
    expanded.data[:] = 1.0
    return expanded


def _pair_similarities(x: np.ndarray, sims: np.ndarray, rank: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """f_i . f_j for the listed pairs: taken from the kNN result where present, computed otherwise."""
    n, k = rank.shape
    order = np.argsort(rank, axis=1)
    knn_keys = (np.arange(n, dtype=np.int64)[:, None] * n + np.take_along_axis(rank, order, axis=1)).ravel()
    knn_sims = np.take_along_axis(sims, order, axis=1).ravel()
    keys = rows.astype(np.int64) * n + cols
    pos = np.minimum(np.searchsorted(knn_keys, keys), knn_keys.size - 1)
    found = knn_keys[pos] == keys
    out = np.where(found, knn_sims[pos], 0.0).astype(np.float32)
    miss = np.flatnonzero(~found)
    step = max(1, (1 << 25) // x.shape[1])  # ~128 MB of gathered rows per step
    for s in range(0, miss.size, step):
        m = miss[s:s + step]
        out[m] = np.einsum("ij,ij->i", x[rows[m]], x[cols[m]])
    return out


def _softmax_rows(neg_logits: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Row-wise softmax of -neg_logits over CSR rows (every row non-empty)."""
    counts = np.diff(indptr)
    starts = indptr[:-1]
    shifted = neg_logits - np.repeat(np.minimum.reduceat(neg_logits, starts), counts)
    w = np.exp(-shifted)
    return w / np.repeat(np.add.reduceat(w, starts), counts)


def _encode(x: np.ndarray, sims: np.ndarray, rank: np.ndarray, k1: int, k2: int) -> sp.csr_matrix:
    """V: softmax weights over R*(i), then query expansion over rank[i, :k2]."""
    n = rank.shape[0]
    expanded = _expanded_sets(rank, k1)
    rows = np.repeat(np.arange(n), np.diff(expanded.indptr))
    sim = _pair_similarities(x, sims, rank, rows, expanded.indices)
    dist = 2.0 - 2.0 * sim.astype(np.float64)
    weights = _softmax_rows(dist, expanded.indptr).astype(np.float32)
    v = sp.csr_matrix((weights, expanded.indices, expanded.indptr), shape=(n, n))
    if k2 != 1:
        q = min(k2, rank.shape[1])
        avg = sp.csr_matrix(
            (np.full(n * q, 1.0 / q, dtype=np.float32), (np.repeat(np.arange(n), q), rank[:, :q].ravel())), shape=(n, n)
        )
        v = (avg @ v).tocsr()
    return v


def _shared_min_sums(v: sp.csr_matrix) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper-triangle (i < j) pairs sharing support in V with m_ij = sum_k min(V_ik, V_jk).

    Walks the inverted index (columns of V): inside each column's posting list, element
    p pairs with every later element, so pairs are generated by repeat/arange arithmetic
    and summed per (i, j) by scipy's COO -> CSR duplicate summation, in bounded chunks.
    """
    n = v.shape[0]
    vc = v.tocsc()
    vc.sort_indices()
    rows, vals, indptr = vc.indices.astype(np.int64), vc.data, vc.indptr.astype(np.int64)
    nnz = rows.size
    partners = np.repeat(indptr[1:], np.diff(indptr)) - 1 - np.arange(nnz)
    ends = np.cumsum(partners)
    parts = []
    start = 0
    while start < nnz:
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _PAIR_CHUNK, side="right")))
        cnt = partners[start:stop]
        total = int(cnt.sum())
        if total:
            first = np.repeat(np.arange(start, stop), cnt)
            second = first + 1 + (np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt))
            chunk = sp.coo_matrix(
                (np.minimum(vals[first], vals[second]), (rows[first], rows[second])), shape=(n, n)
            ).tocsr()
            del first, second
            parts.append(chunk.tocoo())
        start = stop
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    if len(parts) == 1:
        up = parts[0]
    else:
        up = sp.coo_matrix(
            (np.concatenate([p.data for p in parts]), (np.concatenate([p.row for p in parts]), np.concatenate([p.col for p in parts]))),
            shape=(n, n),
        ).tocsr().tocoo()
    return up.row.astype(np.int64), up.col.astype(np.int64), up.data


def jaccard_from_knn(x: np.ndarray, sims: np.ndarray, rank: np.ndarray, k1: int, k2: int) -> sp.csr_matrix:
    """Jaccard distances from unit features and their kNN (self first, k1 columns capped at N)."""
    n = x.shape[0]
    v = _encode(x, sims, rank, k1, k2)
    i, j, m = _shared_min_sums(v)
    m = m.astype(np.float64)
    d = np.maximum(1.0 - m / (2.0 - m), 0.0).astype(np.float32)
    keep = d < 1.0
    i, j, d = i[keep], j[keep], d[keep]
    diag = np.arange(n, dtype=np.int64)
    out = sp.coo_matrix(
        (np.concatenate([d, d, np.zeros(n, dtype=np.float32)]), (np.concatenate([i, j, diag]), np.concatenate([j, i, diag]))),
        shape=(n, n),
    ).tocsr()
    out.sort_indices()
    return out


def check_k(k1: int, k2: int) -> None:
    """Refuse k values the definition cannot use."""
    for key, val in (("k1", k1), ("k2", k2)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ConfigError(f"Cluster.{key}: expected a positive integer, got {val!r}")


def jaccard_distance_timed(
    features: np.ndarray, k1: int = 30, k2: int = 6, knn: str = "exact", device: str = "cpu"
) -> Tuple[sp.csr_matrix, Dict[str, float]]:
    """``jaccard_distance`` plus the seconds of its kNN and Jaccard stages."""
    check_k(k1, k2)
    x = check_features(features)
    t0 = time.perf_counter()
    sims, rank = knn_search(x, min(k1, x.shape[0]), knn, device)
    t1 = time.perf_counter()
    dist = jaccard_from_knn(x, sims, rank, k1, k2)
    t2 = time.perf_counter()
    return dist, {"knn_seconds": t1 - t0, "jaccard_seconds": t2 - t1}


def jaccard_distance(features: np.ndarray, k1: int = 30, k2: int = 6, knn: str = "exact", device: str = "cpu") -> sp.csr_matrix:
    """N x N CSR of k-reciprocal Jaccard distances, storing every pair with distance < 1.

    Rows are L2-normalised first (see ``check_features``); the diagonal's zeros are
    stored explicitly so DBSCAN on the sparse matrix counts each point in its own
    neighbourhood, exactly like the dense matrix.
    """
    return jaccard_distance_timed(features, k1, k2, knn, device)[0]
