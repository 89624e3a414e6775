"""Pseudo labels for one epoch: kNN -> sparse Jaccard -> DBSCAN -> centroids (+ diagnostics).

DBSCAN runs on the sparse precomputed matrix: scikit-learn treats stored entries as the
neighbourhood and absent ones as infinitely far, which is exactly right because absent
pairs have distance 1 >= eps. Before DBSCAN only pairs with distance <= eps are kept and
their values set to an explicit 0: the neighbourhoods are unchanged (so are the labels,
cluster numbering included) and rows are then trivially "sorted by distance", which
spares scikit-learn's per-row Python sort.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import DBSCAN

from ppise.config import CLUSTER_DEFAULTS
from ppise.errors import ConfigError
from ppise.cluster.diagnostics import cluster_diagnostics
from ppise.cluster.features import check_features
from ppise.cluster.gemm_backend import check_choice, preferred
from ppise.cluster.jaccard import check_k, jaccard_of_unit
from ppise.cluster.knn import DEVICES, check_method
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


def _check_params(eps: float, min_samples: int, knn: str, device: str) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not 0 < float(eps) < 1:
        raise ConfigError(f"Cluster.eps: expected a number in (0, 1) (Jaccard distances lie in [0, 1]), got {eps!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, (int, np.integer)) or min_samples < 1:
        raise ConfigError(f"Cluster.min_samples: expected a positive integer, got {min_samples!r}")
    check_method(knn)
    if device not in DEVICES:
        raise ConfigError(f"Cluster.device: unknown value {device!r}; expected one of {DEVICES}")


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
    """Cluster features into pseudo identities.

    ``device='gpu'`` runs the faiss search on GPU when faiss sees one, otherwise it warns
    and uses the CPU. Features are L2-normalised here (rows need not be unit already).
    ``gemm`` picks the library of the exact kNN's matrix products (``gemm_backend``:
    ``auto`` measures once per process and keeps the fastest).
    """
    check_k(k1, k2)
    _check_params(eps, min_samples, knn, device)
    gemm = check_choice(gemm)
    t0 = time.perf_counter()
    x = check_features(features)
    with preferred(gemm):
        dist, stats = jaccard_of_unit(x, k1, k2, knn, device)
    t1 = time.perf_counter()
    labels = dbscan_sparse(dist, float(eps), int(min_samples))
    stats["dbscan_seconds"] = time.perf_counter() - t1
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
    """``pseudo_labels`` with the keys of the ``Cluster`` config section (missing keys take defaults).

    Keys other than k1, k2, eps, min_samples, knn, device, gemm are left to the caller (the
    section may hold hook settings); a bad value raises ConfigError naming ``Cluster.<key>``.
    """
    cfg = dict(_CONFIG_DEFAULTS)
    if cluster_cfg is not None:
        if not isinstance(cluster_cfg, Mapping):
            raise ConfigError(f"Cluster: expected a mapping of keys {sorted(_CONFIG_DEFAULTS)}, got {type(cluster_cfg).__name__}")
        cfg.update({k: v for k, v in cluster_cfg.items() if k in _CONFIG_DEFAULTS and v is not None})
    for key in ("knn", "device", "gemm"):
        if isinstance(cfg[key], str):
            cfg[key] = cfg[key].lower()
    return pseudo_labels(features, true_ids=true_ids, **cfg)
