"""``Cluster.knn: hnsw``: a faiss HNSW graph over PCA-reduced rows, shortlist re-scored exactly.

Kept for comparison with ``ivf`` (pivot_knn.py). The PCA step makes it fail where the
identity information is spread over all dimensions (recall@30 0.58 at N = 32,621 on the
benchmark's default data) and the graph build is slow on 2 cores; CPU only.
"""
from __future__ import annotations

from typing import Tuple

import faiss
import numpy as np

from ppise.cluster.pca import sample_pca

IVF_DIM = 256  # PCA dimensions of the graph
IVF_CELL = 64  # rows per k-means cell when candidates are re-scored
IVF_SHORT_FACTOR = 3  # candidates re-scored exactly per row, in multiples of k
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


def _pca(x: np.ndarray, dim: int, seed: int = 1234) -> np.ndarray:
    """Rows of ``x`` projected on their top-``dim`` principal axes (float32, N x dim).

    Distances in this space only pick candidates; every neighbour kept is re-scored with
    the full features (see ``_refine``).
    """
    n, d = x.shape
    if dim >= d:
        return x
    _, _, vecs = sample_pca(x, np.random.default_rng(seed))
    axes = np.ascontiguousarray(vecs[:, :dim], dtype=np.float32)
    z = np.empty((n, dim), dtype=np.float32)
    step = 16384
    for s in range(0, n, step):  # x @ axes in blocks: no N x D temporary
        np.matmul(x[s:s + step], axes, out=z[s:s + step])
    return z


def _cells(z: np.ndarray, size: int, seed: int = 1234) -> Tuple[np.ndarray, np.ndarray]:
    """k-means on the reduced rows: (centroids, home cell of each row), ~``size`` rows a cell."""
    n, d = z.shape
    ncells = max(1, n // size)
    km = faiss.Kmeans(d, ncells, niter=8, seed=seed, max_points_per_centroid=32, min_points_per_centroid=1)
    km.train(z)
    _, home = km.index.search(z, 1)
    return km.centroids, home[:, 0].astype(np.int64)


def _groups(home: np.ndarray, ncells: int) -> Tuple[np.ndarray, np.ndarray]:
    """Row ids sorted by cell and the cell boundaries in that order."""
    order = np.argsort(home, kind="stable")
    return order, np.searchsorted(home[order], np.arange(ncells + 1))


def _refine(x: np.ndarray, cand: np.ndarray, home: np.ndarray, ncells: int, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Best k of each row's candidates by exact full-dimensional inner products.

    Rows of one cell share most candidates: their union is gathered once and scored
    with one matrix product, then each row reads its own candidates' scores. Duplicate
    candidates are scored -inf after their first copy, so a row never lists a point twice.
    """
    n = x.shape[0]
    order, bounds = _groups(home, ncells)
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for c in range(ncells):
        rows = order[bounds[c]:bounds[c + 1]]
        if rows.size == 0:
            continue
        cr = np.sort(cand[rows], axis=1)
        union, inv = np.unique(cr, return_inverse=True)
        inv = inv.reshape(cr.shape)
        full = x[rows] @ x[union].T
        s = np.take_along_axis(full, inv, axis=1)
        dup = np.zeros(cr.shape, dtype=bool)
        dup[:, 1:] = cr[:, 1:] == cr[:, :-1]
        s[dup] = -np.inf
        kk = min(k, cr.shape[1])
        top_s, top_i = _top_k_rows(s, cr, kk)
        sims[rows, :kk], idx[rows, :kk] = top_s, top_i
        if kk < k:
            sims[rows, kk:], idx[rows, kk:] = -np.inf, -1
    idx[~np.isfinite(sims)] = -1  # fewer distinct candidates than k: re-searched exactly by the caller
    return sims, idx


def _top_k_rows(s: np.ndarray, ids: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Best k of each row, per-row candidate ids, sorted best first."""
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, axis=1)
    o = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(ps, o, axis=1), np.take_along_axis(np.take_along_axis(ids, part, axis=1), o, axis=1)


def hnsw_knn(x: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """faiss HNSW graph over the PCA-reduced rows, shortlist re-scored with the full features.

    Slower to build than ``ivf`` on 2 CPU cores and no more accurate (see the module
    docstring); CPU only (faiss has no GPU HNSW).
    """
    n = x.shape[0]
    z = _pca(x, IVF_DIM)
    short = min(n, max(IVF_SHORT_FACTOR * k, k + 10))
    index = faiss.IndexHNSWFlat(z.shape[1], HNSW_M)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(z)
    index.hnsw.efSearch = max(2 * short, HNSW_EF_SEARCH)
    _, cand = index.search(z, short)
    _, home = _cells(z, IVF_CELL)
    cand = np.where(cand < 0, np.arange(n)[:, None], cand)
    return _refine(x, cand, home, int(home.max()) + 1, k)


