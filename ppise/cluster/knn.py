"""k-nearest-neighbour rank lists with faiss: exact by default, IVF / HNSW for very large N.

Features are unit rows, so inner product order equals the L2 order the reference uses
(cluster contrast searches ``IndexFlatL2``); we search by inner product and return the
similarities too, which the Jaccard step reuses instead of recomputing dot products.
"""
from __future__ import annotations

import math
from typing import Tuple

import faiss
import numpy as np

from ppise.errors import ConfigError
from ppise.utils.logger import logger

KNN_METHODS = ("exact", "ivf", "hnsw")
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


def _top_k(s: np.ndarray, cand: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Best k columns of each row of ``s`` (similarities), sorted best first."""
    if s.shape[1] < k:  # too few candidates: pad, the caller re-searches such rows exactly
        pad = k - s.shape[1]
        s = np.concatenate([s, np.full((s.shape[0], pad), -np.inf, dtype=s.dtype)], axis=1)
        cand = np.concatenate([cand, np.full(pad, -1, dtype=cand.dtype)])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(ps, order, axis=1), cand[np.take_along_axis(part, order, axis=1)]


def _ivf(x: np.ndarray, k: int, device: str) -> Tuple[np.ndarray, np.ndarray]:
    """Inverted-file search done as dense blocks: exact within each query's probed cells.

    k-means splits the points into ~sqrt(N) cells; each query probes its ``nprobe``
    nearest centroids. Per cell, all queries probing it are scored against the cell's
    points with one matrix product, their top k kept, and the per-probe lists merged.
    faiss's CPU IVF scans list by list per query, several times slower for 2048-d
    features; on a GPU faiss's GpuIndexIVFFlat is used instead.
    Recall depends on k-means cells following identities: on features whose variance is
    dominated by shared nuisance directions (camera, pose) it can be poor; prefer
    ``hnsw`` then (see benchmarks/bench_pseudo_label.py).
    """
    n, d = x.shape
    ncells = max(1, int(round(math.sqrt(n))))
    nprobe = min(ncells, 12)
    kmeans = faiss.Kmeans(d, ncells, niter=10, seed=1234, spherical=True, max_points_per_centroid=64, gpu=device == "gpu")
    kmeans.train(x)
    if device == "gpu":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, ncells, faiss.METRIC_INNER_PRODUCT)
        index.quantizer.add(kmeans.centroids)
        index.is_trained = True
        index = _to_gpu(index)
        index.add(x)
        faiss.extract_index_ivf(index).nprobe = nprobe
        return index.search(x, k)
    _, probes = faiss.knn(x, kmeans.centroids, nprobe, metric=faiss.METRIC_INNER_PRODUCT)
    home = probes[:, 0]
    order = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[order], np.arange(ncells + 1))
    flat = probes.ravel()
    by_cell = np.argsort(flat, kind="stable")  # (query, slot) pairs grouped by probed cell
    qbounds = np.searchsorted(flat[by_cell], np.arange(ncells + 1))
    cand_s = np.full((n, nprobe, k), -np.inf, dtype=np.float32)
    cand_i = np.full((n, nprobe, k), -1, dtype=np.int64)
    for c in range(ncells):
        a, b = bounds[c], bounds[c + 1]
        pairs = by_cell[qbounds[c]:qbounds[c + 1]]
        if a == b or pairs.size == 0:
            continue
        members = order[a:b]
        xm = x[members]
        kk = min(k, b - a)
        step = max(1, (1 << 22) // (b - a))  # bounds the score block (and its argpartition) to ~16 MB
        for p0 in range(0, pairs.size, step):
            chunk = pairs[p0:p0 + step]
            queries, slots = chunk // nprobe, chunk % nprobe
            top_s, top_i = _top_k(x[queries] @ xm.T, members, kk)
            cand_s[queries, slots, :kk] = top_s
            cand_i[queries, slots, :kk] = top_i
    return _top_k_rows(cand_s.reshape(n, -1), cand_i.reshape(n, -1), k)


def _top_k_rows(s: np.ndarray, ids: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Best k of each row, per-row candidate ids, sorted best first."""
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, axis=1)
    o = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(ps, o, axis=1), np.take_along_axis(np.take_along_axis(ids, part, axis=1), o, axis=1)


def _hnsw(x: np.ndarray, k: int, device: str) -> Tuple[np.ndarray, np.ndarray]:
    """faiss HNSW graph (M=16, efSearch 128) over the full features; CPU only (faiss has no GPU HNSW)."""
    if device == "gpu":
        logger.warning("Cluster.knn=hnsw has no faiss GPU version; it runs on the CPU")
    index = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(x)
    index.hnsw.efSearch = max(4 * k, 128)
    return index.search(x, k)


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
    search = {"exact": _exact, "ivf": _ivf, "hnsw": _hnsw}[method]
    sims, idx = search(x, k, device)
    idx = idx.astype(np.int64, copy=False)
    short = np.flatnonzero((idx < 0).any(axis=1))
    if short.size:
        s2, i2 = faiss.knn(x[short], x, k, metric=faiss.METRIC_INNER_PRODUCT)
        sims[short], idx[short] = s2, i2
    return _self_first(sims.astype(np.float32, copy=False), idx)
