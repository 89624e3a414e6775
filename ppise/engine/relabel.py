"""The re-clustering stage run before every epoch of an unsupervised run.

extract L2-normalised, un-augmented features of every training image (sharded over ranks,
gathered) -> pseudo labels on rank 0 (kNN -> k-reciprocal Jaccard -> DBSCAN -> centroids)
-> broadcast -> ``(labels, centroids, stats)``. Outliers keep label -1 (the samplers skip
them). Diagnostics against true ids (ARI, NMI, mixed / sub) are logged, never trained on.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import TrainingError
from ..utils import dist
from ..utils.fileio import atomic_write
from ..utils.logger import logger
from .extract import extract_features

STAT_KEYS = ("num_clusters", "num_outliers", "ari", "nmi", "mixed_clusters", "sub_identities", "knn_seconds",
             "jaccard_seconds", "dbscan_seconds", "knn_recall_estimate")


class Relabel:
    """``relabel(net, epoch) -> (labels [N] int64, centroids [C, D] float32, stats)``;
    ``labels_dir`` keeps each epoch's pseudo and true labels (``Cluster.save_labels``)."""

    def __init__(self, extract_loader, cluster_cfg: Dict[str, Any], labels_dir: Optional[str] = None, amp=None) -> None:
        self.extract_loader = extract_loader
        self.amp = amp
        self.cluster_cfg = cluster_cfg
        self.labels_dir = labels_dir

    def __call__(self, net, epoch: int) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
        from ..cluster import pseudo_labels_from_config

        start = time.time()
        out = extract_features(net, self.extract_loader, normalize=True, desc="train (clustering)", amp=self.amp)
        feats, true_ids = out["feats"], out["pids"]
        result = None
        if dist.is_main():
            pl = pseudo_labels_from_config(feats, self.cluster_cfg, true_ids=true_ids)
            result = (pl.labels, pl.centroids, pl.stats)
        labels, centroids, stats = dist.broadcast_object(result)
        labels = np.asarray(labels, dtype=np.int64)
        cfg = self.cluster_cfg
        if int(stats["num_clusters"]) == 0:
            raise TrainingError(
                f"epoch {epoch}: clustering found no cluster ({stats['num_outliers']} outliers of {len(labels)} images); "
                f"raise Cluster.eps (now {cfg['eps']}), lower Cluster.min_samples "
                f"(now {cfg['min_samples']}) or change Cluster.k1 (now {cfg['k1']})")
        if self.labels_dir and dist.is_main():  # with the true ids, for analysis of cluster errors
            os.makedirs(self.labels_dir, exist_ok=True)
            with atomic_write(os.path.join(self.labels_dir, f"epoch_{epoch}.npz"), "wb") as f:
                np.savez(f, labels=labels, true_ids=true_ids)
        record = {k: stats[k] for k in STAT_KEYS if k in stats}
        record["cluster_seconds"] = time.time() - start
        logger.info(f"epoch {epoch}: {describe(stats)} ({record['cluster_seconds']:.1f}s)")
        return labels, centroids, record


def describe(stats: Dict[str, Any]) -> str:
    text = f"{stats['num_clusters']} clusters, {stats['num_outliers']} outliers"
    if "ari" in stats:
        text += f", ARI {stats['ari']:.3f}, NMI {stats['nmi']:.3f}, mixed {stats['mixed_clusters']}, sub {stats['sub_identities']}"
    if "knn_recall_estimate" in stats:
        text += f", kNN recall ~{stats['knn_recall_estimate']:.3f}" + (" (exact fallback)" if stats.get("knn_fallback_exact") else "")
    return text
