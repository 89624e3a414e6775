"""Batch samplers (iterables of index lists) for ``paddle.io.DataLoader(batch_sampler=...)``.

Every rank draws the same global batch, seeded by ``(seed, epoch)`` (call ``set_epoch``), and
yields its own share: no communication. P x K samplers never draw label -1 (outliers) and use
fewer ids when there are fewer clusters than P (``batch_size`` then holds the actual batch).
"""
from __future__ import annotations

import math
from typing import Any, Iterator, List, Optional

import numpy as np

from ..errors import ConfigError, TrainingError
from ..registry import SAMPLERS
from ..utils.logger import logger


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive integer")
    return int(value)


class _EpochSampler:
    """Rank / epoch bookkeeping shared by every sampler."""

    def __init__(self, labels: np.ndarray, batch_size: int, rank: int, world_size: int, seed: int,
                 where: str, ignored: dict) -> None:
        self.where = where
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.batch_size = _positive_int(batch_size, f"{where}.batch_size")
        self.world_size = _positive_int(world_size, "world_size")
        if not 0 <= int(rank) < self.world_size:
            raise ConfigError(f"rank={rank} must be in [0, {self.world_size})")
        self.rank, self.seed, self.epoch = int(rank), int(seed or 0), 0
        if ignored:
            logger.warning(f"{where}: ignoring sampler keys ppise does not use: {', '.join(sorted(ignored))}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([abs(self.seed), self.epoch])


class _PKSamplerBase(_EpochSampler):
    """Groups valid (label >= 0) indices by identity; a batch is P ids x K instances."""

    def __init__(self, labels: np.ndarray, cameras: np.ndarray, batch_size: int, num_instances: int,
                 rank: int, world_size: int, seed: int, where: str, k_key: str, ignored: dict) -> None:
        super().__init__(labels, batch_size, rank, world_size, seed, where, ignored)
        self.num_instances = _positive_int(num_instances, f"{where}.{k_key}")
        if self.batch_size % (self.world_size * self.num_instances):
            raise ConfigError(f"{where}.batch_size={self.batch_size} must be divisible by world_size x {k_key} = "
                              f"{self.world_size} x {self.num_instances} (the global batch is split by identity over ranks)")
        self.num_ids_per_batch = self.batch_size // self.num_instances
        self.cameras = np.zeros_like(self.labels) if cameras is None else np.asarray(cameras, np.int64).reshape(-1)
        if self.cameras.shape != self.labels.shape:
            raise ConfigError(f"{where}: {self.cameras.size} cameras for {self.labels.size} labels")
        valid = np.flatnonzero(self.labels >= 0)
        order = valid[np.argsort(self.labels[valid], kind="stable")]
        self.pids, starts = np.unique(self.labels[order], return_index=True)
        self.members: List[np.ndarray] = np.split(order, starts[1:]) if order.size else []
        self.num_valid = int(order.size)
        self.requested_batch_size = self.batch_size
        self._fit_to_clusters(k_key)

    def _fit_to_clusters(self, k_key: str) -> None:
        """Shrink P to the largest multiple of ``world_size`` the clusters allow (each rank keeps
        whole identities), and say so; below max(2, world_size) clusters: TrainingError."""
        where, k, p, world = self.where, self.num_instances, self.num_ids_per_batch, self.world_size
        num_clusters = len(self.pids)
        if num_clusters >= p:
            return
        knobs = (f"raise Cluster.eps, lower Cluster.min_samples or Cluster.k1, or lower {where}.batch_size "
                 f"(P = {where}.batch_size / {k_key} = {self.batch_size} / {k} = {p})")
        fitted = (num_clusters // world) * world
        if fitted < max(2, world):
            raise TrainingError(f"only {num_clusters} clusters (pseudo identities, outliers excluded), too few to "
                                f"form a batch of pseudo identities on {world} rank(s); {knobs}")
        logger.warning(f"{num_clusters} clusters < P = {p} identities per batch; this epoch uses P = {fitted} "
                       f"({fitted * k} images per batch). To keep the batch: {knobs}")
        self.num_ids_per_batch, self.batch_size = fitted, fitted * k

    def __iter__(self) -> Iterator[List[int]]:
        per_rank = self.batch_size // self.world_size
        for batch in self.global_batches():
            yield batch[self.rank * per_rank:(self.rank + 1) * per_rank].tolist()

    def __len__(self) -> int:
        return self.num_batches


@SAMPLERS.register
class RandomMultipleGallerySampler(_PKSamplerBase):
    """Cluster-contrast's (and the official ISE trainer's) P x K sampler.

    Ids come in random permutations (a tail shorter than P is dropped, as cluster-contrast's
    drop_last loader does), ``iters_per_epoch`` batches an epoch. Each id gives a random anchor
    and K-1 companions by ``rule``. ``official`` (default): from the id's other-camera images
    (its other images if there are none), with replacement when fewer than K, so images repeat
    (~8.6 distinct of 16 on Market-1501). ``distinct`` (ppise's earlier rule): each other-camera
    image once, then same-camera ones, repeating only when the id has fewer than K images.
    An id with one image yields K copies (cluster-contrast yields one, breaking the batch).
    """

    RULES = ("official", "distinct")

    def __init__(self, labels: np.ndarray, cameras: np.ndarray, batch_size: int, num_instances: int = 4,
                 iters_per_epoch: int = 200, rule: str = "official", rank: int = 0, world_size: int = 1,
                 seed: int = 0, where: str = "DataLoader.Train.sampler", **ignored: Any) -> None:
        super().__init__(labels, cameras, batch_size, num_instances, rank, world_size, seed, where,
                         "num_instances", ignored)
        if rule not in self.RULES:
            raise ConfigError(f"{where}.rule={rule!r} must be one of {', '.join(self.RULES)}")
        self.rule = rule
        self.num_batches = _positive_int(iters_per_epoch, f"{where}.iters_per_epoch")
        self.member_cams = [self.cameras[m] for m in self.members]

    def _instances(self, rng: np.random.Generator, i: int) -> np.ndarray:
        members, cams, k = self.members[i], self.member_cams[i], self.num_instances
        anchor = int(rng.integers(len(members)))
        others = np.delete(np.arange(len(members)), anchor)
        other_cam = others[cams[others] != cams[anchor]]
        if self.rule == "official":
            pool = other_cam if other_cam.size else others
            if pool.size == 0:
                return members[np.full(k, anchor)]
            picks = np.concatenate([[anchor], rng.choice(pool, size=k - 1, replace=pool.size < k)])
            return members[picks]
        other_cam = rng.permutation(other_cam)
        same_cam = rng.permutation(others[cams[others] == cams[anchor]])
        picks = np.concatenate([[anchor], other_cam, same_cam])[:k]
        if picks.size < k:
            picks = np.concatenate([picks, rng.integers(len(members), size=k - picks.size)])
        return members[picks]

    def global_batches(self) -> Iterator[np.ndarray]:
        """The epoch's global batches (identical on every rank)."""
        rng, p = self._rng(), self.num_ids_per_batch
        order, pos = rng.permutation(len(self.pids)), 0
        for _ in range(self.num_batches):
            if pos + p > order.size:
                order, pos = rng.permutation(len(self.pids)), 0
            ids, pos = order[pos:pos + p], pos + p
            yield np.concatenate([self._instances(rng, i) for i in ids])


@SAMPLERS.register
class PKSampler(_PKSamplerBase):
    """PaddleClas's PKSampler: P distinct ids a batch, drawn in proportion to their image count
    ('sample_avg_prob') or uniformly ('id_avg_prob'), then K images each (with replacement only
    if fewer). ``len`` = valid images / global batch_size (floor with drop_last, else ceil),
    or ``iters_per_epoch`` when given. ``shuffle`` is accepted for configs: draws are random
    either way (PaddleClas's shuffle drops the probabilities; ppise does not reproduce that).
    """

    METHODS = ("sample_avg_prob", "id_avg_prob")

    def __init__(self, labels: np.ndarray, cameras: np.ndarray, batch_size: int, sample_per_id: int,
                 shuffle: bool = True, drop_last: bool = True, sample_method: str = "sample_avg_prob",
                 iters_per_epoch: Optional[int] = None, rank: int = 0, world_size: int = 1, seed: int = 0,
                 where: str = "DataLoader.Train.sampler", **ignored: Any) -> None:
        super().__init__(labels, cameras, batch_size, sample_per_id, rank, world_size, seed, where,
                         "sample_per_id", ignored)
        if sample_method not in self.METHODS:
            raise ConfigError(f"{where}.sample_method={sample_method!r} must be one of {', '.join(self.METHODS)}")
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        counts = np.array([m.size for m in self.members], dtype=np.float64)
        self.prob = counts / counts.sum() if sample_method == "sample_avg_prob" else np.full(counts.size, 1 / counts.size)
        rounding = math.floor if self.drop_last else math.ceil
        self.num_batches = rounding(self.num_valid / self.batch_size)
        if iters_per_epoch is not None:  # ppise's key: the trainer's steps per epoch (the lr schedule counts them)
            self.num_batches = _positive_int(iters_per_epoch, f"{where}.iters_per_epoch")
        if self.num_batches == 0:
            raise ConfigError(f"{where}.batch_size={self.batch_size} exceeds the {self.num_valid} usable images "
                              f"with drop_last=True: no batch per epoch")

    def global_batches(self) -> Iterator[np.ndarray]:
        rng, k = self._rng(), self.num_instances
        for _ in range(self.num_batches):
            ids = rng.choice(len(self.pids), size=self.num_ids_per_batch, replace=False, p=self.prob)
            yield np.concatenate([rng.choice(self.members[i], size=k, replace=self.members[i].size < k) for i in ids])


@SAMPLERS.register
@SAMPLERS.register(name="DistributedBatchSampler")
class BatchSampler(_EpochSampler):
    """Sequential (or shuffled) batches over every index, ``batch_size`` per rank. Rank r takes
    the r-th block of ``ceil(N / world_size)`` indices, padded with the last one; the first
    ``num_samples_total`` gathered rows are the original order (``valid_mask``: real rows here)."""

    def __init__(self, labels: np.ndarray, cameras: Any = None, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, seed: int = 0,
                 where: str = "DataLoader.Eval.sampler", **ignored: Any) -> None:
        super().__init__(labels, batch_size, rank, world_size, seed, where, ignored)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.num_samples_total = int(self.labels.size)
        if self.num_samples_total == 0:
            raise ConfigError(f"{where}: the dataset is empty")
        self.num_samples = math.ceil(self.num_samples_total / self.world_size)
        start = self.rank * self.num_samples
        self.valid_mask = np.arange(start, start + self.num_samples) < self.num_samples_total

    def __iter__(self) -> Iterator[List[int]]:
        n = self.num_samples_total
        order = self._rng().permutation(n) if self.shuffle else np.arange(n)
        padded = np.concatenate([order, np.full(self.num_samples * self.world_size - n, order[-1])])
        shard = padded[self.rank * self.num_samples:(self.rank + 1) * self.num_samples]
        for b in range(len(self)):
            yield shard[b * self.batch_size:(b + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(self.num_samples / self.batch_size)
