"""Pseudo labels for one epoch: kNN -> sparse Jaccard -> DBSCAN -> centroids (+ diagnostics).

Sparse DBSCAN treats absent pairs (distance 1 >= eps) as infinitely far; pairs within eps get
an explicit 0, so rows are trivially sorted and scikit-learn skips its per-row Python sort.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import DBSCAN

from ppise.config import CLUSTER_DEFAULTS, check_key
from ppise.errors import ConfigError
from ppise.cluster.diagnostics import cluster_diagnostics
from ppise.cluster.features import check_features
from ppise.cluster.gemm_backend import check_choice, preferred
from ppise.cluster.jaccard import check_k, jaccard_from_knn
from ppise.cluster.knn import check_method, knn_search, resolve_device
from ppise.utils.arrays import l2_normalize


@dataclass
class PseudoLabels:
    """labels (int64, -1 = outlier), centroids (float32 unit rows in label order), stats."""

    labels: np.ndarray
    centroids: np.ndarray
    stats: Dict[str, Any] = field(default_factory=dict)


def dbscan_sparse(dist: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """scikit-learn DBSCAN(metric='precomputed') on the eps-neighbourhood graph of ``dist``."""
    coo = dist.tocoo()
    near = coo.data <= eps
    graph = sp.csr_matrix(
        (np.zeros(int(near.sum()), dtype=np.float64), (coo.row[near], coo.col[near])), shape=dist.shape
    )
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph).astype(np.int64)


def cluster_centroids(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean of the unit features of each cluster 0..C-1, re-normalised (float32, C x dim)."""
    num = int(labels.max(initial=-1)) + 1
    kept = labels >= 0
    members = sp.csr_matrix(
        (np.ones(int(kept.sum()), dtype=np.float32), (labels[kept], np.flatnonzero(kept))), shape=(num, x.shape[0])
    )
    return l2_normalize(np.asarray(members @ x))


def pseudo_labels(
    features: np.ndarray,
    k1: int = 30,
    k2: int = 6,
    eps: float = 0.6,
    min_samples: int = 4,
    true_ids: Optional[np.ndarray] = None,
    knn: str = "exact",
    device: str = "cpu",
    gemm: str = "auto",
) -> PseudoLabels:
    """Cluster features (L2-normalised here) into pseudo identities; ``gemm`` picks the exact
    kNN's matrix-product library (``gemm_backend``)."""
    check_k(k1, k2)
    check_key("Cluster", "eps", eps)  # config.CLUSTER_SCHEMA's checks and messages
    check_key("Cluster", "min_samples", min_samples)
    check_method(knn)
    device = resolve_device(device)
    gemm = check_choice(gemm)
    t0 = time.perf_counter()
    x = check_features(features)
    info: Dict[str, Any] = {}
    with preferred(gemm):
        t1 = time.perf_counter()
        sims, rank = knn_search(x, min(k1, x.shape[0]), knn, device, info)
        t2 = time.perf_counter()
        dist = jaccard_from_knn(x, sims, rank, k1, k2, knn=knn)
    t3 = time.perf_counter()
    labels = dbscan_sparse(dist, float(eps), int(min_samples))
    stats = {"knn_seconds": t2 - t1, "jaccard_seconds": t3 - t2, **info}
    stats["dbscan_seconds"] = time.perf_counter() - t3
    centroids = cluster_centroids(x, labels)
    stats["num_clusters"] = int(centroids.shape[0])
    stats["num_outliers"] = int((labels < 0).sum())
    if true_ids is not None:
        stats.update(cluster_diagnostics(labels, true_ids))
    stats["seconds"] = time.perf_counter() - t0
    return PseudoLabels(labels=labels, centroids=centroids, stats=stats)


_CONFIG_DEFAULTS = {k: CLUSTER_DEFAULTS[k] for k in ("k1", "k2", "eps", "min_samples", "knn", "device", "gemm")}


def pseudo_labels_from_config(
    features: np.ndarray, cluster_cfg: Optional[Mapping[str, Any]], true_ids: Optional[np.ndarray] = None
) -> PseudoLabels:
    """``pseudo_labels`` with the keys of the ``Cluster`` config section (missing: defaults);
    other keys (hook settings) are ignored."""
    cfg = dict(_CONFIG_DEFAULTS)
    if cluster_cfg is not None:
        if not isinstance(cluster_cfg, Mapping):
            raise ConfigError(f"Cluster: expected a mapping of keys {sorted(_CONFIG_DEFAULTS)}, got {type(cluster_cfg).__name__}")
        cfg.update({k: v for k, v in cluster_cfg.items() if k in _CONFIG_DEFAULTS and v is not None})
    for key in ("knn", "device", "gemm"):
        cfg[key] = cfg[key].lower() if isinstance(cfg[key], str) else cfg[key]
    return pseudo_labels(features, true_ids=true_ids, **cfg)
