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


def _ivf(x: np.ndarray, k: int, device: str) -> Tuple[np.ndarray, np.ndarray]:
    n, d = x.shape
    nlist = int(max(1, min(4 * math.sqrt(n), n // 39)))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10  # coarse cells only need to be roughly right; nprobe buys the recall
    rng = np.random.default_rng(0)
    train = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist, replace=False))]
    index.train(train)
    if device == "gpu":
        index = _to_gpu(index)
    index.add(x)
    faiss.extract_index_ivf(index).nprobe = min(nlist, max(8, nlist // 64))
    return index.search(x, k)


def _hnsw(x: np.ndarray, k: int, device: str) -> Tuple[np.ndarray, np.ndarray]:
    if device == "gpu":
        logger.warning("Cluster.knn=hnsw has no faiss GPU version; it runs on the CPU")
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(x)
    index.hnsw.efSearch = max(2 * k, 64)
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
