"""Cluster memory loss (cluster contrast, Dai et al. 2021).

One unit vector per pseudo identity (the "memory", reset from the centroids at every
re-clustering) serves as the classifier: logits = normalise(x) . M^T / tau and the loss is
cross-entropy against the pseudo label. After each optimizer step the memory drifts
towards the batch by momentum (``update``):

* ``ori`` (the official ``--sample-type ori``, cluster-contrast's ``CM``): for every cluster y
  present and each x of y in batch order, M[y] <- normalise(m M[y] + (1 - m) x), renormalised
  after every x. Exact; vectorised across clusters, one step per position within a cluster.
* ``hard`` (``--sample-type hard``): only the x of y least similar to M[y] (the hardest
  instance): M[y] <- m M[y] + (1 - m) x_hard, renormalise.
* ``mean``: the closed-form approximation of ``ori`` with one renormalisation at the end,
  M[y] <- normalise(m^n M[y] + (1 - m) sum_k m^(n-1-k) x_k), one segment sum. It agrees with
  ``ori`` to first order in (1 - m), not exactly (row cosine ~0.9998 after 20 batches).

With ISE the supports join the instances in this loss and in the update (so a support can be
a cluster's "hardest" sample), as in the official ``ClusterContrastTrainerSupport``, whose update
runs in backward; ppise updates after ``optimizer.step`` with the same detached features.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppise.errors import ConfigError, TrainingError
from ppise.registry import LOSSES
from ppise.utils.arrays import l2_normalize

ArrayLike = Union[np.ndarray, paddle.Tensor]

__all__ = ["ClusterMemoryLoss"]

_UPDATES = ("ori", "hard", "mean")


def _to_numpy(arr: ArrayLike) -> np.ndarray:
    return arr.detach().cpu().numpy() if isinstance(arr, paddle.Tensor) else np.asarray(arr)


@LOSSES.register
class ClusterMemoryLoss(nn.Layer):
    """Contrast each feature with every cluster's memory vector.

    Args:
        num_features: D, the feature size the memory must have.
        temperature: tau of the softmax (0.05 in cluster contrast and ISE).
        momentum: m of the memory update (ISE: 0.2 Market-1501, 0.1 MSMT17).
        weight: factor the objective applies (``forward`` returns the loss unweighted).
    """

    def __init__(self, num_features: int = 2048, temperature: float = 0.05, momentum: float = 0.2,
                 update: str = "hard", weight: float = 1.0) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ConfigError(f"ClusterMemoryLoss: num_features must be an int >= 1, got {num_features!r}")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
            raise ConfigError(f"ClusterMemoryLoss: temperature must be > 0, got {temperature!r}")
        if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0.0 <= momentum < 1.0:
            raise ConfigError(f"ClusterMemoryLoss: momentum must lie in [0, 1), got {momentum!r}")
        if update not in _UPDATES:
            raise ConfigError(f"ClusterMemoryLoss: update must be one of {_UPDATES}, got {update!r}")
        self.num_features = num_features
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.update_mode = update
        self.weight = float(weight)
        # Not persistable: C changes every epoch, so it travels through memory_state().
        self.register_buffer("memory", paddle.zeros([0, num_features], dtype="float32"), persistable=False)

    # ---------------------------------------------------------------- memory state
    @property
    def num_clusters(self) -> int:
        return int(self.memory.shape[0])

    def _check_memory(self, arr: np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] < 1:
            raise TrainingError(f"ClusterMemoryLoss.{what}: need a non-empty [C, D] array, got shape {arr.shape}")
        if arr.shape[1] != self.num_features:
            raise ConfigError(f"ClusterMemoryLoss.{what}: features have {arr.shape[1]} dims but "
                              f"Loss.Train.ClusterMemoryLoss.num_features is {self.num_features}")
        if not np.isfinite(arr).all():
            raise TrainingError(f"ClusterMemoryLoss.{what}: centroids contain NaN or Inf")
        return arr

    def _set(self, arr: np.ndarray) -> None:
        self.memory = paddle.to_tensor(arr, dtype="float32", place=self.memory.place, stop_gradient=True)

    def reset(self, centroids: ArrayLike) -> None:
        """Replace the memory by the new epoch's centroids (rows re-normalised)."""
        arr = self._check_memory(_to_numpy(centroids), "reset")
        if not arr.any(axis=1).all():
            raise TrainingError("ClusterMemoryLoss.reset: a centroid has zero norm")
        self._set(l2_normalize(arr))

    def memory_state(self) -> np.ndarray:
        """A copy of the memory for checkpoints (``.pdstates``)."""
        return self.memory.numpy().copy()

    def set_memory_state(self, arr: ArrayLike) -> None:
        """Restore :meth:`memory_state` exactly (no re-normalisation)."""
        self._set(self._check_memory(_to_numpy(arr), "set_memory_state"))

    # ---------------------------------------------------------------- loss
    def _labels(self, labels: paddle.Tensor, n: int) -> paddle.Tensor:
        if self.num_clusters == 0:
            raise TrainingError("ClusterMemoryLoss: memory is empty; call reset(centroids) after clustering")
        labels = labels.reshape([-1]).astype("int64")
        if labels.shape[0] != n:
            raise ValueError(f"ClusterMemoryLoss: {n} inputs but {labels.shape[0]} labels")
        lab_min, lab_max = int(labels.min()), int(labels.max())
        if lab_min < 0 or lab_max >= self.num_clusters:
            raise TrainingError(f"ClusterMemoryLoss: labels must lie in [0, {self.num_clusters}), "
                                f"got [{lab_min}, {lab_max}]")
        return labels

    def similarity(self, inputs: paddle.Tensor) -> paddle.Tensor:
        """normalise(inputs) . M^T: [N, C] cosines to every cluster (differentiable in inputs)."""
        x = l2_normalize(inputs)
        memory = self.memory if self.memory.dtype == x.dtype else self.memory.astype(x.dtype)
        return paddle.matmul(x, memory, transpose_y=True)

    def forward(self, inputs: paddle.Tensor, labels: paddle.Tensor,
                similarity: Optional[paddle.Tensor] = None) -> paddle.Tensor:
        """Unweighted cross-entropy of normalise(inputs) . M^T / tau against ``labels``;
        ``similarity`` = :meth:`similarity` of ``inputs`` when the caller already has it."""
        labels = self._labels(labels, int(inputs.shape[0]))
        sim = self.similarity(inputs) if similarity is None else similarity
        return F.cross_entropy(sim / self.temperature, labels, reduction="mean")

    # ---------------------------------------------------------------- update
    @paddle.no_grad()
    def update(self, inputs: paddle.Tensor, labels: paddle.Tensor) -> None:
        """Momentum update of the rows of clusters present in the batch (call after the step)."""
        labels = self._labels(labels, int(inputs.shape[0]))
        x = l2_normalize(inputs.detach().astype("float32"))
        lab = labels.numpy()
        m = self.momentum
        order = np.argsort(lab, kind="stable")  # groups each cluster, batch order kept inside it
        uniq, start, counts = np.unique(lab[order], return_index=True, return_counts=True)
        rows_idx = paddle.to_tensor(uniq, dtype="int64", place=x.place)  # rows every mode updates
        if self.update_mode == "ori":
            # Step k updates, for every cluster with more than k rows, its memory row with its
            # k-th x (a loop over positions only).
            new_rows = paddle.gather(self.memory, rows_idx)
            for k in range(int(counts.max())):
                active = np.flatnonzero(counts > k)
                act = paddle.to_tensor(active, dtype="int64", place=x.place)
                x_k = paddle.gather(x, paddle.to_tensor(order[start[active] + k], dtype="int64", place=x.place))
                stepped = l2_normalize(m * paddle.gather(new_rows, act) + (1.0 - m) * x_k)
                new_rows = paddle.scatter(new_rows, act, stepped, overwrite=True)
        elif self.update_mode == "mean":
            rank = np.empty_like(order)
            rank[order] = np.arange(lab.size) - np.repeat(start, counts)  # k: position within its cluster
            group = np.searchsorted(uniq, lab)
            n_of = counts[group]
            coef = (1.0 - m) * np.power(m, (n_of - 1 - rank).astype(np.float64))
            coef_t = paddle.to_tensor(coef.astype(np.float32), place=x.place).unsqueeze(1)
            seg = paddle.zeros([uniq.size, x.shape[1]], dtype="float32")
            seg = paddle.index_add(seg, paddle.to_tensor(group, place=x.place), 0, x * coef_t)
            keep = paddle.to_tensor(np.power(m, counts.astype(np.float64)).astype(np.float32), place=x.place)
            new_rows = keep.unsqueeze(1) * paddle.gather(self.memory, rows_idx) + seg
        else:
            own = paddle.gather(self.memory, labels)
            sim = (x * own).sum(axis=1).numpy()
            # Least similar x of each cluster, clusters in ``uniq`` order; ties keep batch order
            # like np.argmin.
            hardest = np.lexsort((sim, lab))[start]
            x_hard = paddle.gather(x, paddle.to_tensor(hardest, dtype="int64", place=x.place))
            new_rows = m * paddle.gather(self.memory, rows_idx) + (1.0 - m) * x_hard
        new_rows = l2_normalize(new_rows)
        self.memory = paddle.scatter(self.memory, rows_idx, new_rows, overwrite=True)
        self.memory.stop_gradient = True

    def extra_repr(self) -> str:
        return (f"clusters={self.num_clusters}, num_features={self.num_features}, "
                f"temperature={self.temperature}, momentum={self.momentum}, "
                f"update={self.update_mode}, weight={self.weight}")
