"""Clustering quality against true ids (logged only, never used for training).

ARI and NMI count each outlier as its own cluster, so dropping hard samples does not look
better; ``mixed_clusters`` and ``sub_identities`` are the two error kinds ISE targets.
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
    kept = ~out
    pairs = np.unique(np.stack([labels[kept], truth[kept]], axis=1), axis=0)  # distinct (label, id)
    return {
        "ari": float(adjusted_rand_score(truth, singletons)),
        "nmi": float(normalized_mutual_info_score(truth, singletons)),
        "mixed_clusters": int((np.bincount(pairs[:, 0]) > 1).sum()),
        "sub_identities": int((np.bincount(pairs[:, 1]) > 1).sum()),
    }
