"""Clustering quality against true ids (logged only, never used for training).

ARI and NMI count each outlier as its own cluster, so dropping hard samples does not look
better. ``mixed_clusters`` (several true ids) and ``sub_identities`` (an id split over
several clusters) are the two error kinds ISE targets.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from ppise.errors import DataError


def cluster_diagnostics(labels: np.ndarray, true_ids: np.ndarray) -> Dict[str, float]:
    """ARI, NMI, mixed clusters and sub identities of pseudo ``labels`` against ``true_ids``."""
    labels = np.asarray(labels, dtype=np.int64)
    true_ids = np.asarray(true_ids)
    if true_ids.shape != labels.shape:
        raise DataError(f"true_ids: expected shape {labels.shape} (one id per feature row), got {true_ids.shape}")
    _, truth = np.unique(true_ids, return_inverse=True)
    truth = truth.reshape(-1).astype(np.int64)
    singletons = labels.copy()
    out = labels < 0
    singletons[out] = labels.max(initial=-1) + 1 + np.arange(int(out.sum()))
    stats: Dict[str, float] = {
        "ari": float(adjusted_rand_score(truth, singletons)),
        "nmi": float(normalized_mutual_info_score(truth, singletons)),
        "mixed_clusters": 0,
        "sub_identities": 0,
    }
    kept = ~out
    if kept.any():
        pairs = np.unique(np.stack([labels[kept], truth[kept]], axis=1), axis=0)  # distinct pairs
        ids_per_cluster = np.bincount(pairs[:, 0])
        clusters_per_id = np.bincount(pairs[:, 1])
        stats["mixed_clusters"] = int((ids_per_cluster > 1).sum())
        stats["sub_identities"] = int((clusters_per_id > 1).sum())
    return stats
