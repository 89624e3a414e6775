"""k-nearest-neighbour rank lists: exact by default (``gemm_knn``), pivot cells for large N.

Inner-product order on unit rows is the reference's L2 order; the neighbours' exact
similarities are returned for the Jaccard step. ``ivf`` searches exactly on small sets and
below ``IVF_MIN_RECALL`` (on features crowding a low-dimensional subspace it reached 0.80).
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
    """'gpu' only when faiss sees a GPU, else warn and use the CPU (faiss-cpu beside paddle-gpu)."""
    if device not in DEVICES:
        raise ConfigError(f"Cluster.device: unknown value {device!r}; expected one of {DEVICES}")
    if device == "gpu" and faiss.get_num_gpus() == 0:
        logger.warning("Cluster.device=gpu but faiss sees no GPU (faiss-cpu build?); kNN runs on the CPU")
        return "cpu"
    return device


def _exact(x: np.ndarray, k: int, device: str) -> Tuple[np.ndarray, np.ndarray]:
    if device == "gpu":
        index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(x.shape[1]))
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
    """Put each point itself in column 0, keeping the others' order (a duplicate may come
    first); rows missing the point drop their last neighbour to make room."""
    own = np.arange(idx.shape[0], dtype=idx.dtype)
    mask = idx == own[:, None]
    missing = ~mask.any(axis=1)
    idx[missing, -1], sims[missing, -1] = own[missing], 1.0
    mask[missing, -1] = True
    if not mask[:, 0].all():
        order = np.argsort(~mask, axis=1, kind="stable")
        sims, idx = np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)
    return sims, idx


def knn_search(
    x: np.ndarray, k: int, method: str = "exact", device: str = "cpu", info: Optional[Dict[str, float]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """(similarities float32, indices int64), N x k, self first, then nearest first, for unit
    float32 rows ``x`` and k <= N; ``info`` receives the method's diagnostics."""
    check_method(method)
    device = resolve_device(device)
    info = {} if info is None else info
    with all_cores():
        sims, idx = _ivf(x, k, device, info) if method == "ivf" else _exact(x, k, device)
        idx = idx.astype(np.int64, copy=False)
        short = np.flatnonzero((idx < 0).any(axis=1))
        if short.size:
            sims[short], idx[short] = topk_inner_product(x[short], x, k)
    return _self_first(sims.astype(np.float32, copy=False), idx)
