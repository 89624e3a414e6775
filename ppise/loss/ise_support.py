"""ISESupport: implicit sample extension by progressive linear interpolation (PLI).

ISE (Zhang et al., CVPR 2022) pushes each instance towards its nearest *other* clusters: the
"support samples" keep its label, so the memory and the LP loss learn from the boundary that
DBSCAN leaves ambiguous. A parameter-free part of the objective (``Loss.Train``), not the model.

Formula (docs/design.md section 3), with f the L2-normalised model feature and M the cluster
memory (unit rows)::

    alpha_t = (base_lambda / 4) * ln(1 + (e - 1) * t / T)
    n_1..n_K = the K centroids most similar to f_i, own centroid y_i excluded
    s_ik = normalise(f_i + alpha_t * (M[n_k] - M[y_i])),   label y_i

The official code computes ``cur_lambda = 0.5 * base_lambda * ln(...)`` and then adds
``0.5 * cur_lambda * (M[n] - M[y])``: the same alpha_t. Its model returns L2-normalised
training features (``norm=True``), which is why ``features`` is normalised here first.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import paddle
import paddle.nn as nn

from ppise.errors import ConfigError, TrainingError
from ppise.registry import LOSSES
from ppise.utils.arrays import l2_normalize

Progress = Union[float, Sequence[int]]

__all__ = ["ISESupport", "pli_alpha"]


def _progress_fraction(progress: Progress) -> float:
    """t / T from ``(t, T)`` or a float already in [0, 1]."""
    if isinstance(progress, (tuple, list)):
        if len(progress) != 2:
            raise ValueError(f"progress must be (t, T) or a float, got {progress!r}")
        t, total = progress
        if total <= 0:
            raise ValueError(f"progress total iterations T must be > 0, got {total}")
        frac = float(t) / float(total)
    else:
        frac = float(progress)
    if not (0.0 <= frac <= 1.0) or math.isnan(frac):
        raise ValueError(f"progress t/T must lie in [0, 1], got {frac} from {progress!r}")
    return frac


def pli_alpha(progress: Progress, base_lambda: float) -> float:
    """alpha_t = (base_lambda / 4) * ln(1 + (e - 1) t / T): 0 at the start, base_lambda / 4 at the end."""
    return 0.25 * base_lambda * math.log1p((math.e - 1.0) * _progress_fraction(progress))


@LOSSES.register
class ISESupport(nn.Layer):
    """Support-sample generator (PLI), no parameters: each instance is pushed towards its ``topk``
    nearest other clusters (official: 1); alpha_t ends at ``base_lambda`` / 4 (official
    ``--support_base_lambda``: 1.0, in both released training scripts)."""

    def __init__(self, topk: int = 1, base_lambda: float = 1.0) -> None:
        super().__init__()
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ConfigError(f"ISESupport: topk must be an int >= 1, got {topk!r}")
        if isinstance(base_lambda, bool) or not isinstance(base_lambda, (int, float)) or base_lambda < 0:
            raise ConfigError(f"ISESupport: base_lambda must be a number >= 0, got {base_lambda!r}")
        self.topk = int(topk)
        self.base_lambda = float(base_lambda)

    def forward(self, features: paddle.Tensor, labels: paddle.Tensor, centroids: paddle.Tensor,
                progress: Progress, similarity: Optional[paddle.Tensor] = None
                ) -> Tuple[paddle.Tensor, paddle.Tensor, float]:
        """Return ``(supports [B*K, D] unit rows, support_labels [B*K], alpha_t)``, sample-major.

        Gradients reach ``features`` through the supports, never the ``centroids`` (the momentum
        memory). ``similarity`` ([B, C], normalise(features) . centroids^T), when the caller has
        it, is reused by the nearest-cluster search.
        """
        if features.ndim != 2 or centroids.ndim != 2 or features.shape[1] != centroids.shape[1]:
            raise ValueError(f"ISESupport: features [B, D] and centroids [C, D] expected, got "
                             f"{list(features.shape)} and {list(centroids.shape)}")
        num_clusters = int(centroids.shape[0])
        k = self.topk
        if k >= num_clusters:
            raise TrainingError(f"ISESupport: Loss.Train ISESupport.topk={k} needs more than {k} "
                                f"clusters, but clustering gave {num_clusters}; lower topk or "
                                f"relax Cluster.eps")
        labels = labels.reshape([-1]).astype("int64")
        lab_min, lab_max = int(labels.min()), int(labels.max())
        if lab_min < 0 or lab_max >= num_clusters:
            raise TrainingError(f"ISESupport: pseudo labels must lie in [0, {num_clusters}), got "
                                f"[{lab_min}, {lab_max}] (outliers -1 must be dropped before "
                                f"training)")
        alpha = pli_alpha(progress, self.base_lambda)
        feats = l2_normalize(features)
        memory = centroids.detach()
        memory = memory if memory.dtype == feats.dtype else memory.astype(feats.dtype)
        batch, dim = feats.shape

        with paddle.no_grad():
            sim = paddle.matmul(feats.detach(), memory, transpose_y=True) if similarity is None else similarity.detach()
            own = labels.unsqueeze(1)  # each sample's own cluster is never its nearest other one
            sim = paddle.put_along_axis(sim, own, paddle.full(own.shape, float("-inf"), sim.dtype), axis=1)
            # [B, K], most similar first (argmax: the same index as topk's first, at a tenth of the cost)
            nearest = sim.argmax(axis=1, keepdim=True) if k == 1 else paddle.topk(sim, k=k, axis=1)[1]

        neighbours = paddle.gather(memory, nearest.reshape([-1])).reshape([batch, k, dim])
        own_centre = paddle.gather(memory, labels).unsqueeze(1)  # [B, 1, D]
        supports = feats.unsqueeze(1) + alpha * (neighbours - own_centre)
        supports = l2_normalize(supports.reshape([batch * k, dim]))
        support_labels = paddle.repeat_interleave(labels, k)
        return supports, support_labels, alpha
