"""k-nearest-neighbour rank lists with faiss: exact by default, approximate options for large N.

Features are unit rows, so inner product order equals the L2 order the reference uses
(cluster contrast searches ``IndexFlatL2``); we search by inner product and return the
similarities too, which the Jaccard step reuses instead of recomputing dot products.

``Cluster.knn`` options. Every approximate option only *picks candidates* cheaply and then
re-scores a shortlist of ``IVF_SHORT_FACTOR * k`` candidates per row with the full
features, so the similarities returned are exact full-dimensional ones and only recall
can differ from ``exact``. Below ``4 * IVF_CELL`` rows they all run the exact search.

* ``exact``: faiss brute force (``faiss.knn``), O(N^2 D). The reference behaviour.
* ``ivf``: PCA to ``IVF_DIM`` dims, k-means cells of ~``IVF_CELL`` rows, each row scores
  the cells it and its cell-mates probe, then exact re-ranking. Fastest; recommended
  approximate option, but only where the leading principal axes carry the identity
  signal (trained CNN features usually; synthetic ``--id-rank 128`` data of
  benchmarks/bench_pseudo_label.py). On features whose identity signal is spread over
  all 2048 dims (the benchmark's default ``--id-rank 0`` data) recall collapses with N:
  0.986 at N = 12,936 but 0.45 at 32,621 (labels ARI 0.07 vs exact).
* ``pca``: exact search in the PCA space (1/8 of the FLOPs at 2048 -> 256 dims), then
  re-ranking. Better recall than ``ivf`` (0.994 at 12,936) for 8x less work than
  ``exact``, so still O(N^2): it does not meet a 90 s budget at N = 100,000 on 2 cores.
* ``hnsw``: faiss HNSW graph over the PCA rows, then re-ranking. Recall like ``pca``, but
  the graph build is slow on 2 cores (47 s at N = 12,936 under load): not recommended.

The Jaccard stage refuses (``TrainingError``) neighbour lists whose k-reciprocal sets
would not fit in memory, which is how poor approximate lists show up at large N.
"""
from __future__ import annotations

from typing import Tuple

import faiss
import numpy as np

from ppise.errors import ConfigError
from ppise.utils.logger import logger

KNN_METHODS = ("exact", "ivf", "pca", "hnsw")
# Approximate search settings (measured in benchmarks/bench_pseudo_label.py on 2 CPU cores).
IVF_DIM = 256  # PCA dimensions used to pick candidates
IVF_CELL = 64  # rows per k-means cell
IVF_NPROBE = 8  # cells probed per row (its cell-mates probe more: see _shortlist_ivf)
IVF_SHORT_FACTOR = 3  # candidates re-scored exactly per row, in multiples of k
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
DEVICES = ("cpu", "gpu")


def resolve_device(device: str) -> str:
    """Return 'gpu' only when faiss sees a GPU; otherwise warn once and use the CPU.

    Paddle may train on a GPU while only faiss-cpu is installed; refusing to cluster then
    would stop a run that the CPU can finish, so we fall back with a warning instead.
    """
    if device not in DEVICES:
        raise ConfigError(f"Cluster.device: unknown value {device!r}; expected one of {DEVICES}")
    if device == "gpu" and faiss.get_num_gpus() == 0:
        logger.warning("Cluster.device=gpu but faiss sees no GPU (faiss-cpu build?); kNN runs on the CPU")
        return "cpu"
    return device


def _to_gpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_cpu_to_all_gpus(index)


def _exact(x: np.ndarray, k: int, device: str) -> Tuple[np.ndarray, np.ndarray]:
    if device == "gpu":
        index = _to_gpu(faiss.IndexFlatIP(x.shape[1]))
        index.add(x)
        return index.search(x, k)
    # faiss.knn needs no index copy of the database: memory stays at the features alone.
    return faiss.knn(x, x, k, metric=faiss.METRIC_INNER_PRODUCT)


def _top_eigenvectors(gram: np.ndarray, dim: int, rng: np.random.Generator, iters: int = 4) -> np.ndarray:
    """Leading ``dim`` eigenvectors of a symmetric PSD matrix by subspace iteration (float32, D x dim).

    A full D x D eigen-decomposition costs seconds at D = 2048; candidate picking needs
    only a good leading subspace, which a few products with a D x (dim + 64) block give.
    """
    d = gram.shape[0]
    width = min(d, dim + 64)
    q = np.linalg.qr(gram @ rng.standard_normal((d, width), dtype=np.float32))[0]
    for _ in range(iters):
        q = np.linalg.qr(gram @ q)[0]
    vals, vecs = np.linalg.eigh(q.T @ gram @ q)
    return np.ascontiguousarray((q @ vecs[:, ::-1][:, :dim]).astype(np.float32))


def _pca(x: np.ndarray, dim: int, seed: int = 1234) -> np.ndarray:
    """Rows of ``x`` projected on their top-``dim`` principal axes (float32, N x dim).

    The axes come from a random sample of at most 8192 rows: the covariance is
    D x D whatever N is. Distances in this space only pick candidates; every
    neighbour kept is re-scored with the full features (see ``_refine``).
    """
    n, d = x.shape
    if dim >= d:
        return x
    rng = np.random.default_rng(seed)
    sample = x[np.sort(rng.choice(n, min(n, 8192), replace=False))]
    mean = sample.mean(axis=0)
    sample -= mean
    gram = sample.T @ sample
    axes = _top_eigenvectors(gram, dim, rng)
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


def _shortlist_ivf(z: np.ndarray, centroids: np.ndarray, home: np.ndarray, short: int, nprobe: int) -> np.ndarray:
    """Per row, the ``short`` nearest rows (reduced L2) among the cells its cell-mates probe.

    Rows are handled cell by cell: the rows of one cell are scored against all members of
    the union of the ``nprobe`` nearest cells of each of them with one matrix product, so
    a row also searches cells its neighbours probe (better recall at cell borders) and
    BLAS does all the work.
    """
    n = z.shape[0]
    ncells = centroids.shape[0]
    nprobe = min(nprobe, ncells)
    _, probes = faiss.knn(z, centroids, nprobe)
    order, bounds = _groups(home, ncells)
    sq = np.einsum("ij,ij->i", z, z)
    cand = np.empty((n, short), dtype=np.int64)
    for c in range(ncells):
        rows = order[bounds[c]:bounds[c + 1]]
        if rows.size == 0:
            continue
        cells = np.unique(probes[rows])
        members = np.concatenate([order[bounds[k]:bounds[k + 1]] for k in cells])
        kk = min(short, members.size)
        score = z[rows] @ z[members].T
        score *= 2.0
        score -= sq[members]
        part = np.argpartition(-score, kk - 1, axis=1)[:, :kk]
        got = members[part]
        if kk < short:  # tiny sets: repeat the last candidate (duplicates are dropped later)
            got = np.concatenate([got, np.repeat(got[:, -1:], short - kk, axis=1)], axis=1)
        cand[rows] = got
    return cand


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


def _ivf(x: np.ndarray, k: int, device: str) -> Tuple[np.ndarray, np.ndarray]:
    """Reduce, partition, shortlist, refine: exact distances, approximate recall only.

    PCA to ``IVF_DIM`` dims; k-means cells of ~``IVF_CELL`` rows in that space; each row
    shortlists ``IVF_SHORT_FACTOR * k`` candidates from the cells it and its cell-mates
    probe (``IVF_NPROBE`` nearest centroids each); the shortlist is re-scored with the
    full features. Cells and shortlist run on the CPU whatever ``device`` is: they are
    cheap next to an exact search.
    """
    n = x.shape[0]
    if n <= 4 * IVF_CELL:  # too few points for cells to pay: exact search
        return _exact(x, k, device)
    z = _pca(x, IVF_DIM)
    centroids, home = _cells(z, IVF_CELL)
    cand = _shortlist_ivf(z, centroids, home, max(IVF_SHORT_FACTOR * k, k + 10), IVF_NPROBE)
    del z
    return _refine(x, cand, home, centroids.shape[0], k)


def _pca_exact(x: np.ndarray, k: int, device: str) -> Tuple[np.ndarray, np.ndarray]:
    """Exact search in the PCA space (1/8 of the FLOPs at 2048 -> 256 dims), then refine."""
    n = x.shape[0]
    if n <= 4 * IVF_CELL:
        return _exact(x, k, device)
    z = _pca(x, IVF_DIM)
    short = min(n, max(IVF_SHORT_FACTOR * k, k + 10))
    if device == "gpu":
        index = _to_gpu(faiss.IndexFlatL2(z.shape[1]))
        index.add(z)
        _, cand = index.search(z, short)
    else:
        _, cand = faiss.knn(z, z, short)
    _, home = _cells(z, IVF_CELL)
    return _refine(x, cand, home, int(home.max()) + 1, k)


def _top_k_rows(s: np.ndarray, ids: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Best k of each row, per-row candidate ids, sorted best first."""
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, axis=1)
    o = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(ps, o, axis=1), np.take_along_axis(np.take_along_axis(ids, part, axis=1), o, axis=1)


def _hnsw(x: np.ndarray, k: int, device: str) -> Tuple[np.ndarray, np.ndarray]:
    """faiss HNSW graph over the PCA-reduced rows, shortlist re-scored with the full features.

    Slower to build than ``ivf`` on 2 CPU cores and no more accurate (see the module
    docstring); CPU only (faiss has no GPU HNSW).
    """
    if device == "gpu":
        logger.warning("Cluster.knn=hnsw has no faiss GPU version; it runs on the CPU")
    n = x.shape[0]
    if n <= 4 * IVF_CELL:
        return _exact(x, k, "cpu")
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


def _self_first(sims: np.ndarray, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Put each point itself in column 0, keeping the order of the others.

    With duplicate features (or an approximate index) faiss may list a twin before the
    point or miss the point; the definition wants i first, so rows missing i drop their
    last neighbour to make room (its similarity to itself is 1).
    """
    n, k = idx.shape
    own = np.arange(n, dtype=idx.dtype)
    mask = idx == own[:, None]
    missing = ~mask.any(axis=1)
    if missing.any():
        idx[missing, -1] = own[missing]
        sims[missing, -1] = 1.0
        mask = idx == own[:, None]
    if not mask[:, 0].all():
        order = np.argsort(~mask, axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1)
        sims = np.take_along_axis(sims, order, axis=1)
    return sims, idx


def knn_search(x: np.ndarray, k: int, method: str = "exact", device: str = "cpu") -> Tuple[np.ndarray, np.ndarray]:
    """Return (similarities float32, indices int64), N x k, each row nearest first, self first.

    ``x`` must be unit float32 rows (see ``check_features``); ``k`` must be <= N.
    Approximate methods may leave rows short (faiss pads with -1): those rows are
    searched again exactly, so every row holds k real neighbours.
    """
    if method not in KNN_METHODS:
        raise ConfigError(f"Cluster.knn: unknown value {method!r}; expected one of {KNN_METHODS}")
    device = resolve_device(device)
    search = {"exact": _exact, "ivf": _ivf, "pca": _pca_exact, "hnsw": _hnsw}[method]
    sims, idx = search(x, k, device)
    idx = idx.astype(np.int64, copy=False)
    short = np.flatnonzero((idx < 0).any(axis=1))
    if short.size:
        s2, i2 = faiss.knn(x[short], x, k, metric=faiss.METRIC_INNER_PRODUCT)
        sims[short], idx[short] = s2, i2
    return _self_first(sims.astype(np.float32, copy=False), idx)
