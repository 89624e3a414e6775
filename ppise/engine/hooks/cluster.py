"""ClusterHook: before each epoch, pseudo-label the training set and rebuild the sampler."""
from __future__ import annotations

import os
import time
from typing import Any, Dict

import numpy as np

from ...config import get
from ...errors import TrainingError
from ...registry import HOOKS
from ...utils import dist
from ...utils.logger import logger
from ..extract import extract_features
from .base import Hook

STAT_KEYS = ("num_clusters", "num_outliers", "ari", "nmi", "mixed_clusters", "sub_identities", "knn_seconds", "jaccard_seconds", "dbscan_seconds", "knn_recall_estimate")


@HOOKS.register
class ClusterHook(Hook):
    """Extract un-augmented train features, cluster once (rank 0), broadcast, reset memory."""

    priority = 10

    def __init__(self, cfg: Dict[str, Any]) -> None:
        self.cfg = cfg
        self.extract_loader = None

    def _build_extract_loader(self, trainer) -> None:
        from ...data import build_dataloader, build_dataset, build_sampler

        cfg = self.cfg
        ops = get(cfg, "Cluster.transform_ops", None) or get(cfg, "DataLoader.Eval.Query.dataset.transform_ops", None)
        dataset = build_dataset(get(cfg, "DataLoader.Train"), "DataLoader.Train", transform_ops=ops)
        batch = int(get(cfg, "Cluster.batch_size", None) or get(cfg, "DataLoader.Eval.Query.sampler.batch_size", 64))
        sampler = build_sampler({"name": "BatchSampler", "batch_size": batch}, dataset.labels, dataset.cameras,
                                where="Cluster", rank=dist.rank(), world_size=dist.world_size())
        loader_cfg = get(cfg, "DataLoader.Eval.Query.loader", None) or get(cfg, "DataLoader.Train.loader", None)
        self.extract_loader = build_dataloader(dataset, sampler, loader_cfg)

    def _fit_batch_to_clusters(self, trainer, sampler_cfg: Dict[str, Any], num_clusters: int) -> Dict[str, Any]:
        """With fewer clusters than the P identities a batch needs, use fewer this epoch (and say so)."""
        k = int(sampler_cfg.get("num_instances", sampler_cfg.get("sample_per_id", 4)))
        p = int(sampler_cfg.get("batch_size", 0)) // max(1, k)
        world = dist.world_size()
        if sampler_cfg.get("name") not in ("RandomMultipleGallerySampler", "PKSampler") or num_clusters >= p:
            return sampler_cfg
        fitted = (num_clusters // world) * world
        knobs = (f"raise Cluster.eps (now {self.cfg['Cluster']['eps']}), lower Cluster.min_samples "
                 f"(now {self.cfg['Cluster']['min_samples']}) or Cluster.k1 (now {self.cfg['Cluster']['k1']}), "
                 f"or lower DataLoader.Train.sampler.batch_size")
        if fitted < max(2, world):
            raise TrainingError(f"epoch {trainer.epoch}: only {num_clusters} clusters, too few to form a batch of "
                                f"pseudo identities on {world} rank(s); {knobs}")
        logger.warning(f"epoch {trainer.epoch}: {num_clusters} clusters < P = {p} identities per batch; this epoch uses "
                       f"P = {fitted} ({fitted * k} images per batch). To keep the batch: {knobs}")
        trainer.epoch_record["batch_size"] = fitted * k
        return dict(sampler_cfg, batch_size=fitted * k)

    def _save_labels(self, epoch: int, labels: np.ndarray, true_ids: np.ndarray) -> None:
        """Keep each epoch's pseudo labels (``Cluster.save_labels``) for analysis of cluster errors."""
        out = os.path.join(self.cfg["Global"]["output_dir"], "pseudo_labels")
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, f"epoch_{epoch}.npz")
        np.savez(path + ".tmp.npz", labels=labels, true_ids=true_ids)
        os.replace(path + ".tmp.npz", path)

    def before_epoch(self, trainer) -> None:
        from ...cluster import pseudo_labels_from_config
        from ...data import build_dataloader, build_sampler

        if self.extract_loader is None:
            self._build_extract_loader(trainer)
        start = time.time()
        out = extract_features(trainer.net, self.extract_loader, normalize=True, desc="train (clustering)")
        feats, true_ids = out["feats"], out["pids"]
        result = None
        if dist.is_main():
            pl = pseudo_labels_from_config(feats, self.cfg["Cluster"], true_ids=true_ids)
            result = (pl.labels, pl.centroids, pl.stats)
        labels, centroids, stats = dist.broadcast_object(result)
        num_clusters = int(stats["num_clusters"])
        if num_clusters == 0:
            raise TrainingError(
                f"epoch {trainer.epoch}: clustering found no cluster ({stats['num_outliers']} outliers of {len(labels)} images); "
                f"raise Cluster.eps (now {self.cfg['Cluster']['eps']}), lower Cluster.min_samples "
                f"(now {self.cfg['Cluster']['min_samples']}) or change Cluster.k1 (now {self.cfg['Cluster']['k1']})"
            )
        trainer.pseudo_labels = np.asarray(labels, dtype=np.int64)
        if self.cfg["Cluster"].get("save_labels") and dist.is_main():
            self._save_labels(trainer.epoch, trainer.pseudo_labels, true_ids)
        trainer.memory.reset(centroids)
        sampler_cfg = self._fit_batch_to_clusters(trainer, get(self.cfg, "DataLoader.Train.sampler"), num_clusters)
        sampler = build_sampler(sampler_cfg, trainer.pseudo_labels, trainer.train_set.cameras, where="DataLoader.Train.sampler",
                                rank=dist.rank(), world_size=dist.world_size(), seed=int(self.cfg["Global"].get("seed") or 0))
        sampler.set_epoch(trainer.epoch)
        trainer.train_loader = build_dataloader(trainer.train_set, sampler, get(self.cfg, "DataLoader.Train.loader", None))
        seconds = time.time() - start
        record = {k: stats[k] for k in STAT_KEYS if k in stats}
        record["cluster_seconds"] = seconds
        trainer.epoch_record.update(record)
        extra = f", ARI {stats['ari']:.3f}, NMI {stats['nmi']:.3f}, mixed {stats['mixed_clusters']}, sub {stats['sub_identities']}" if "ari" in stats else ""
        if "knn_recall_estimate" in stats:
            extra += f", kNN recall ~{stats['knn_recall_estimate']:.3f}" + (" (exact fallback)" if stats.get("knn_fallback_exact") else "")
        logger.info(f"epoch {trainer.epoch}: {num_clusters} clusters, {stats['num_outliers']} outliers{extra} ({seconds:.1f}s)")
