"""Label-preserving (LP) loss of ISE: keep support samples on their own identity's side.

With e_ij = exp(f_i . s_j / tau_lp) (f normalised, s unit supports)::

    pos_i  = min_{j : y_s[j] = y_i} e_ij                       (hardest positive support)
    neg_i  = sum_{g != y_i} max_{j : y_s[j] = g} e_ij           (hardest support per other identity)
    loss   = mean_i -log(pos_i / (pos_i + neg_i + 1e-6) + 1e-6)

Batched: a masked min for the positive, a segment max over support identities for the
negatives. exp(c_i), c_i = max_j f_i.s_j / tau, is factored out of numerator and denominator
(the inner 1e-6 becomes 1e-6 exp(-c_i)): the same value, without overflow for small tau.

The official ``CriterionLP`` takes the per-identity max by reshaping the negatives, which is
only right for P x K batches of contiguous, equal-sized identities; the segment max gives the
same value there and the formula's value on any batch.

Under the launcher the supports are gathered from every rank (gradients flow back to their
owner), so the mean of the ranks' losses equals the global batch's loss in one process, as in
the official ``nn.DataParallel`` trainer. Every rank must hold the same number of supports.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from ppise.errors import ConfigError
from ppise.registry import LOSSES
from ppise.utils import dist
from ppise.utils.arrays import l2_normalize

__all__ = ["LabelPreservingLoss"]

_EPS = 1e-6
_LOG_EPS = -13.815510557964274  # ln(1e-6)
_MAX_SHIFT = 80.0  # exp(80) ~ 5.5e34 stays finite in float32


@LOSSES.register
class LabelPreservingLoss(nn.Layer):
    """ISE's LP loss (tau_lp = 0.6 and weight 0.1 on Market-1501 in the official code)."""

    def __init__(self, temperature: float = 0.6, weight: float = 0.1) -> None:
        super().__init__()
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
            raise ConfigError(f"LabelPreservingLoss: temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.weight = float(weight)

    def forward(self, features: paddle.Tensor, supports: paddle.Tensor, labels: paddle.Tensor,
                support_labels: paddle.Tensor) -> paddle.Tensor:
        """Unweighted LP loss of this rank's anchors against every rank's supports; every label
        of ``labels`` must have at least one support."""
        labels = labels.reshape([-1]).astype("int64")
        support_labels = support_labels.reshape([-1]).astype("int64")
        if supports.shape[0] != support_labels.shape[0] or features.shape[0] != labels.shape[0]:
            raise ValueError(f"LabelPreservingLoss: {features.shape[0]} features / "
                             f"{labels.shape[0]} labels, {supports.shape[0]} supports / "
                             f"{support_labels.shape[0]} support labels")
        if dist.world_size() > 1:
            supports = dist.all_gather_with_grad(supports)
            support_labels = dist.all_gather(support_labels)
        f = l2_normalize(features)
        logits = paddle.matmul(f, supports.astype(f.dtype), transpose_y=True) / self.temperature  # [B, N]

        same = labels.unsqueeze(1) == support_labels.unsqueeze(0)  # [B, N]
        if not bool(same.any(axis=1).all()):
            raise ValueError("LabelPreservingLoss: some instance has no support sample of its own label")
        pos = paddle.where(same, logits, paddle.full_like(logits, float("inf"))).min(axis=1)  # [B]

        # Hardest support of every identity: sort supports by identity, segment max over N.
        groups, group_of_support = paddle.unique(support_labels, return_inverse=True)
        order = paddle.argsort(group_of_support, stable=True)
        per_group = paddle.geometric.segment_max(
            paddle.gather(logits.transpose([1, 0]), order), paddle.gather(group_of_support, order)
        ).transpose([1, 0])  # [B, G]
        is_neg = labels.unsqueeze(1) != groups.unsqueeze(0)  # [B, G]

        shift = paddle.maximum(logits.max(axis=1), pos).detach()  # c_i
        pos_e = paddle.exp(pos - shift)
        neg_e = (paddle.exp(per_group - shift.unsqueeze(1)) * is_neg.astype(logits.dtype)).sum(axis=1)
        eps_e = paddle.exp(paddle.clip(_LOG_EPS - shift, max=_MAX_SHIFT))
        ratio = pos_e / (pos_e + neg_e + eps_e)
        return (-paddle.log(ratio + _EPS)).mean()
