"""k-nearest-neighbour rank lists with faiss: exact by default, approximate options for large N.

Features are unit rows, so inner product order equals the L2 order the reference uses
(cluster contrast searches ``IndexFlatL2``); we search by inner product and return the
similarities too, which the Jaccard step reuses instead of recomputing dot products.

``Cluster.knn`` options. Every option returns the exact full-dimensional similarities of
the neighbours it lists; only recall can differ from ``exact``.

* ``exact``: brute force, O(N^2 D). On the CPU the products come from numpy's BLAS and
  faiss's heaps keep the best k (``gemm_knn.py``: about 5x faster than ``faiss.knn`` on
  the development machines); ``device: gpu`` uses a faiss GPU flat index.
* ``ivf``: overlapping pivot cells (``pivot_knn.py``): each row joins the cells of its 8
  most similar pivots, pairs inside a cell are scored exactly. About N * 2048 pairs instead
  of N^2; the stats report a recall estimate measured on 256 rows every time, and below
  ``pivot_knn.IVF_MIN_RECALL`` the exact search replaces the lists (with a warning): on features
  whose identities crowd a low-dimensional subspace (benchmark ``--id-rank 128``, N =
  100,000) it reached only 0.80, and labels from such lists were far off (ARI 0.15).
  Recommended for N in the hundreds of thousands; below ``pivot_knn.APPROX_MIN_ROWS`` rows it runs
  ``exact``.

The Jaccard stage refuses (``TrainingError``) neighbour lists whose k-reciprocal sets
would not fit in memory, which is how poor approximate lists show up at large N.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import faiss
import numpy as np

from ppise.cluster import pivot_knn as pivot
from ppise.cluster.gemm_knn import all_cores, topk_inner_product
from ppise.errors import ConfigError
from ppise.utils.logger import logger

KNN_METHODS = ("exact", "ivf")
REMOVED_METHODS = {"hnsw": "removed (its recall collapsed on re-ID features); ivf is the approximate option"}
DEVICES = ("cpu", "gpu")


def check_method(method: str) -> None:
    """ConfigError naming ``Cluster.knn`` and its choices unless ``method`` is one of them."""
    if method not in KNN_METHODS:
        why = f" ({REMOVED_METHODS[method]})" if method in REMOVED_METHODS else ""
        raise ConfigError(f"Cluster.knn: unknown value {method!r}{why}; expected one of {', '.join(KNN_METHODS)}")


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
    return topk_inner_product(x, x, k)


def _ivf(x: np.ndarray, k: int, device: str, info: Dict[str, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Overlapping pivot cells (see ``pivot_knn``); CPU whatever ``device`` is (it is matrix products)."""
    if x.shape[0] < pivot.APPROX_MIN_ROWS:
        logger.info(f"Cluster.knn=ivf: {x.shape[0]} rows < {pivot.APPROX_MIN_ROWS}, where the exact search is as "
                    "fast: using it")
        return _exact(x, k, device)
    sims, idx, found = pivot.pivot_knn(x, k)
    info.update({f"knn_{key}": value for key, value in found.items()})
    if found["recall_estimate"] < pivot.IVF_MIN_RECALL:
        logger.warning(
            f"Cluster.knn=ivf: estimated recall {found['recall_estimate']:.3f} < {pivot.IVF_MIN_RECALL} on these features "
            f"(N={x.shape[0]}); searching exactly instead so the pseudo labels stay right. "
            "Set Cluster.knn: exact to skip the attempt."
        )
        info.update(knn_fallback_exact=1.0, knn_approx_recall_estimate=found["recall_estimate"], knn_recall_estimate=1.0)
        return _exact(x, k, device)
    return sims, idx


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


def knn_search(
    x: np.ndarray, k: int, method: str = "exact", device: str = "cpu", info: Optional[Dict[str, float]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Return (similarities float32, indices int64), N x k, each row nearest first, self first.

    ``x`` must be unit float32 rows (see ``check_features``); ``k`` must be <= N.
    Approximate methods may leave rows short: those rows are searched again exactly, so
    every row holds k real neighbours. ``info``, when given, receives the method's
    diagnostics (``knn_recall_estimate``... for ``ivf``).
    """
    check_method(method)
    device = resolve_device(device)
    info = {} if info is None else info
    with all_cores():
        if method == "ivf":
            sims, idx = _ivf(x, k, device, info)
        else:
            sims, idx = _exact(x, k, device)
        idx = idx.astype(np.int64, copy=False)
        short = np.flatnonzero((idx < 0).any(axis=1))
        if short.size:
            s2, i2 = topk_inner_product(x[short], x, k)
            sims[short], idx[short] = s2, i2
    return _self_first(sims.astype(np.float32, copy=False), idx)
