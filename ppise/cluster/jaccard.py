"""Sparse k-reciprocal Jaccard distance (docs/design.md section 3), vectorised with scipy.sparse.

Same answer as cluster contrast's ``compute_jaccard_distance`` (its ``rank[i, :k1+1]`` has k1
entries, self included; expansion uses k = int(np.around(k1 / 2)) and a strict > 2/3), but
every N x N object is sparse with O(N*k) entries and no Python loop runs over samples.
Deviations: N < k1 caps the rank length at N; a duplicate listed before the point itself is
moved after it; the diagonal is an exact 0 (the reference's float32 sums leave ~1e-7).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import psutil
import scipy.sparse as sp

from ppise.errors import ConfigError, TrainingError
from ppise.cluster.features import check_features
from ppise.cluster.knn import knn_search

# Pairs generated per block of rows in the min-sum: bounds the transient memory (~30 bytes a pair).
_PAIR_CHUNK = 1 << 20
# Peak bytes per stored upper-triangle pair (column, distance, their concatenation, the
# transpose, the symmetric result); measured 46 at N = 100,000 (20.4 M and 52.3 M pairs).
BYTES_PER_PAIR = 48
MEMORY_ENV = "PPISE_JACCARD_MEMORY_GB"


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


def _pair_similarities(x: np.ndarray, sims: np.ndarray, rank: np.ndarray, pattern: sp.csr_matrix) -> np.ndarray:
    """f_i . f_j for every stored (i, j) of ``pattern`` (CSR, sorted indices), in storage order:
    kNN pairs reuse the search's similarities, the few others are computed in batches."""
    n, k = rank.shape
    known = sp.csr_matrix(  # +4 so that no known similarity is 0
        (sims.astype(np.float64).ravel() + 4.0, rank.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n)
    )
    hit = (pattern + pattern.multiply(known)).tocsr()  # same pattern; 1 + (s + 4) where known, 1 elsewhere
    hit.sort_indices()
    out = (hit.data - 5.0).astype(np.float32)
    miss = np.flatnonzero(hit.data < 2.0)
    if miss.size:
        rows = np.repeat(np.arange(n), np.diff(pattern.indptr))[miss]
        cols = pattern.indices[miss]
        step = max(1, (1 << 21) // x.shape[1])  # ~8 MB gathered per operand and step
        for s in range(0, miss.size, step):
            sl = slice(s, s + step)
            out[miss[sl]] = np.einsum("ij,ij->i", x[rows[sl]], x[cols[sl]])
    return out


def _encode(x: np.ndarray, sims: np.ndarray, rank: np.ndarray, k1: int, k2: int) -> sp.csr_matrix:
    """V: softmax weights over R*(i), then query expansion over rank[i, :k2]."""
    n = rank.shape[0]
    expanded = _expanded_sets(rank, k1)
    dist = 2.0 - 2.0 * _pair_similarities(x, sims, rank, expanded).astype(np.float64)
    starts, counts = expanded.indptr[:-1], np.diff(expanded.indptr)  # every row holds i itself
    w = np.exp(-(dist - np.repeat(np.minimum.reduceat(dist, starts), counts)))
    weights = (w / np.repeat(np.add.reduceat(w, starts), counts)).astype(np.float32)
    v = sp.csr_matrix((weights, expanded.indices, expanded.indptr), shape=(n, n))
    if k2 != 1:
        q = min(k2, rank.shape[1])
        avg = _binary(np.repeat(np.arange(n), q), rank[:, :q].ravel(), n) * (1.0 / q)
        v = (avg @ v).tocsr()
    return v


def _pair_budget(budget_bytes: Optional[float]) -> float:
    """Budget of the stored pairs, bytes: argument, else $PPISE_JACCARD_MEMORY_GB, else RAM / 2."""
    if budget_bytes is not None:
        return float(budget_bytes)
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            gb = float(env)
        except ValueError:
            raise ConfigError(f"{MEMORY_ENV}: expected a number of GB, got {env!r}") from None
        if not gb > 0:
            raise ConfigError(f"{MEMORY_ENV}: expected a positive number of GB, got {env!r}")
        return gb * 2**30
    return 0.5 * psutil.virtual_memory().available


class _PairBlocks:
    """Upper-triangle pairs of V sharing support, block of rows by block of rows (small blocks
    stay in the allocator's reuse range: no page-fault storms)."""

    def __init__(self, v: sp.csr_matrix) -> None:
        self.v = v
        self.n = n = v.shape[0]
        v.sort_indices()
        nnz = v.nnz
        # CSC view of the same entries: csc element e is CSR element to_csr[e]
        csc = sp.csr_matrix((np.arange(nnz, dtype=np.int64), v.indices, v.indptr), shape=v.shape).tocsc()
        csc.sort_indices()
        to_csr = csc.data
        self.csc_rows = csc.indices.astype(np.int32, copy=False)
        self.csc_vals = v.data[to_csr]
        self.idx = np.int32 if nnz < 2**31 - 1 else np.int64
        self.pos = pos = np.empty(nnz, dtype=np.int64)
        pos[to_csr] = np.arange(nnz, dtype=np.int64)
        # partners of V_ik: the rows after i in column k's posting list
        self.cnt = csc.indptr[1:][v.indices].astype(np.int64) - pos - 1
        row_of = np.repeat(np.arange(n), np.diff(v.indptr))
        self.row_pairs = np.bincount(row_of, weights=self.cnt, minlength=n).astype(np.int64)
        self.ends = np.cumsum(self.row_pairs)

    def block(self, r0: int, r1: int) -> Optional[sp.csr_matrix]:
        """Rows r0..r1-1 of the upper-triangle min-sum matrix (CSR, local rows), None if empty."""
        v, cnt, pos = self.v, self.cnt, self.pos
        e0, e1 = v.indptr[r0], v.indptr[r1]
        c = cnt[e0:e1]
        total = int(self.row_pairs[r0:r1].sum())
        if not total:
            return None
        second = np.arange(total, dtype=self.idx)
        second += np.repeat((pos[e0:e1] + 1 - (np.cumsum(c) - c)).astype(self.idx), c)
        vals = np.minimum(np.repeat(v.data[e0:e1], c), self.csc_vals[second])
        indptr = np.concatenate([[0], np.cumsum(self.row_pairs[r0:r1])])
        block = sp.csr_matrix((vals, self.csc_rows[second], indptr), shape=(r1 - r0, self.n)).tocsc().tocsr()
        block.sum_duplicates()
        return block

    def estimate_stored(self, samples: int = 1024, seed: int = 0) -> float:
        """Expected number of distinct pairs: the free raw count (``ends``) times the distinct /
        raw ratio of ``samples`` rows drawn in proportion to their raw count."""
        raw = int(self.ends[-1]) if self.n else 0
        if raw == 0:
            return 0.0
        rng = np.random.default_rng(seed)
        drawn = np.searchsorted(self.ends, rng.integers(0, raw, samples), side="right")
        rows, times = np.unique(drawn, return_counts=True)
        ratios = np.array([self.block(int(r), int(r) + 1).nnz / self.row_pairs[r] for r in rows])
        return float(raw * np.average(ratios, weights=times))


def _upper_distances(
    v: sp.csr_matrix, budget_bytes: Optional[float] = None, knn: str = "exact", k1: int = 30
) -> sp.csr_matrix:
    """Upper triangle (i < j) of the Jaccard distances < 1, CSR with sorted int32 columns; a pair
    set over the memory budget (estimated, then counted) raises ``TrainingError``."""
    pairs = _PairBlocks(v)
    n = pairs.n
    budget = _pair_budget(budget_bytes)
    limit = budget / BYTES_PER_PAIR

    def refuse(count: float, how: str) -> TrainingError:
        return TrainingError(
            f"Cluster.knn={knn!r}, Cluster.k1={k1}: the Jaccard stage would store {how} {count:,.0f} pairs "
            f"(~{count * BYTES_PER_PAIR / 2**30:.1f} GB at ~{BYTES_PER_PAIR} bytes a pair) for N={n}, over its memory "
            f"budget of {budget / 2**30:.1f} GB (default: half the available RAM; set {MEMORY_ENV} to change it). "
            + (
                "Poor approximate neighbour lists inflate the k-reciprocal sets: try Cluster.knn: exact, or a smaller Cluster.k1."
                if knn != "exact"
                else "Try a smaller Cluster.k1, or more free memory."
            )
        )

    estimate = pairs.estimate_stored()
    if estimate > limit:
        raise refuse(estimate, "an estimated")
    counts = np.zeros(n, dtype=np.int64)
    cols_out, dist_out = [np.zeros(0, dtype=np.int32)], [np.zeros(0, dtype=np.float32)]
    stored = 0
    r0 = 0
    ends = pairs.ends
    while r0 < n:
        base = ends[r0 - 1] if r0 else 0
        r1 = min(n, max(r0 + 1, int(np.searchsorted(ends, base + _PAIR_CHUNK, side="right"))))
        block = pairs.block(r0, r1)
        if block is not None:
            stored += block.nnz
            if stored > limit:
                raise refuse(stored * ends[-1] / max(1, ends[r1 - 1]), "a projected")
            m = block.data.astype(np.float64)
            d = np.maximum(1.0 - m / (2.0 - m), 0.0).astype(np.float32)
            keep = d < 1.0
            local_rows = np.repeat(np.arange(r1 - r0), np.diff(block.indptr))[keep]
            counts[r0:r1] = np.bincount(local_rows, minlength=r1 - r0)
            cols_out.append(block.indices[keep].astype(np.int32))
            dist_out.append(d[keep])
        r0 = r1
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return sp.csr_matrix((np.concatenate(dist_out), np.concatenate(cols_out), indptr), shape=(n, n))


def _symmetric_with_zero_diagonal(upper: sp.csr_matrix) -> sp.csr_matrix:
    """Full CSR (columns sorted) from a strictly upper-triangular one, with an explicit 0 at
    (r, r); explicit zeros off the diagonal (duplicates) are kept, unlike ``upper + upper.T``."""
    n = upper.shape[0]
    lower = upper.T.tocsr()  # a transpose by counting sort: columns sorted, explicit zeros kept
    c_low, c_up = np.diff(lower.indptr), np.diff(upper.indptr)
    total = int(lower.nnz + n + upper.nnz)
    idx_dtype = np.int32 if total < 2**31 - 1 else np.int64
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(c_low + 1 + c_up, out=indptr[1:])
    indices = np.empty(total, dtype=idx_dtype)
    data = np.empty(total, dtype=np.float32)
    pos = np.repeat(indptr[:-1] - lower.indptr[:-1], c_low) + np.arange(lower.nnz)
    indices[pos], data[pos] = lower.indices, lower.data
    del lower, pos
    diag = indptr[:-1] + c_low
    indices[diag], data[diag] = np.arange(n), 0.0
    pos = np.repeat(indptr[:-1] + c_low + 1 - upper.indptr[:-1], c_up) + np.arange(upper.nnz)
    indices[pos], data[pos] = upper.indices, upper.data
    out = sp.csr_matrix((data, indices, indptr.astype(idx_dtype)), shape=(n, n))
    out.has_sorted_indices = True
    return out


def jaccard_from_knn(
    x: np.ndarray,
    sims: np.ndarray,
    rank: np.ndarray,
    k1: int,
    k2: int,
    memory_budget_bytes: Optional[float] = None,
    knn: str = "exact",
) -> sp.csr_matrix:
    """Jaccard distances from unit features and their kNN (self first, k1 columns capped at N);
    ``knn`` only names the search method in the error raised over ``memory_budget_bytes``."""
    v = _encode(x, sims, rank, k1, k2)
    upper = _upper_distances(v, memory_budget_bytes, knn, k1)
    del v
    return _symmetric_with_zero_diagonal(upper)


def check_k(k1: int, k2: int) -> None:
    """Refuse k values the definition cannot use."""
    for key, val in (("k1", k1), ("k2", k2)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ConfigError(f"Cluster.{key}: expected a positive integer, got {val!r}")


def jaccard_distance(
    features: np.ndarray,
    k1: int = 30,
    k2: int = 6,
    knn: str = "exact",
    device: str = "cpu",
    memory_budget_bytes: Optional[float] = None,
) -> sp.csr_matrix:
    """N x N CSR of k-reciprocal Jaccard distances of L2-normalised rows: every pair < 1, and
    the diagonal's zeros (so sparse DBSCAN counts each point in its own neighbourhood)."""
    check_k(k1, k2)
    x = check_features(features)
    sims, rank = knn_search(x, min(k1, x.shape[0]), knn, device)
    return jaccard_from_knn(x, sims, rank, k1, k2, memory_budget_bytes, knn)
