"""CELoss and SupConLoss with PaddleClas's names and arguments (``ResNet50_UReID_infer.yaml``).

Each takes a tensor or PaddleClas's output dict (``{"logits": ...}`` / ``{"features": ...}``)
and returns an unweighted scalar; the objective applies ``weight``.
"""
from __future__ import annotations

from typing import Dict, Optional, Union

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppise.errors import ConfigError
from ppise.registry import LOSSES

TensorOrDict = Union[paddle.Tensor, Dict[str, paddle.Tensor]]

__all__ = ["CELoss", "SupConLoss"]


def _pick(x: TensorOrDict, key: str) -> paddle.Tensor:
    return x[key] if isinstance(x, dict) else x


@LOSSES.register
class CELoss(nn.Layer):
    """Softmax cross-entropy, with label smoothing ``epsilon`` when given (PaddleClas CELoss)."""

    def __init__(self, weight: float = 1.0, epsilon: Optional[float] = None, reduction: str = "mean") -> None:
        super().__init__()
        if epsilon is not None and not 0.0 <= float(epsilon) < 1.0:
            raise ConfigError(f"CELoss: epsilon must lie in [0, 1), got {epsilon!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ConfigError(f"CELoss: reduction must be mean, sum or none, got {reduction!r}")
        self.weight = float(weight)
        self.epsilon = None if epsilon in (None, 0, 0.0) else float(epsilon)
        self.reduction = reduction

    def forward(self, logits: TensorOrDict, labels: paddle.Tensor) -> paddle.Tensor:
        logits = _pick(logits, "logits")
        labels = labels.reshape([-1]).astype("int64")
        if self.epsilon is None:
            return F.cross_entropy(logits, labels, reduction=self.reduction)
        soft = F.label_smooth(F.one_hot(labels, logits.shape[-1]), epsilon=self.epsilon)
        loss = -(soft * F.log_softmax(logits, axis=-1)).sum(axis=-1)
        return loss.mean() if self.reduction == "mean" else loss.sum() if self.reduction == "sum" else loss


@LOSSES.register
class SupConLoss(nn.Layer):
    """Supervised contrastive loss (Khosla et al. 2020) over ``views`` adjacent rows per identity
    (a PK batch with ``sample_per_id == views``, as PaddleClas assumes)."""

    def __init__(self, weight: float = 1.0, views: int = 16, temperature: float = 0.07, contrast_mode: str = "all",
                 base_temperature: float = 0.07, normalize_feature: bool = True) -> None:
        super().__init__()
        if not isinstance(views, int) or views < 1:
            raise ConfigError(f"SupConLoss: views must be an int >= 1, got {views!r}")
        if contrast_mode not in ("all", "one"):
            raise ConfigError(f"SupConLoss: contrast_mode must be all or one, got {contrast_mode!r}")
        if temperature <= 0 or base_temperature <= 0:
            raise ConfigError("SupConLoss: temperature and base_temperature must be > 0")
        self.weight = float(weight)
        self.views = views
        self.temperature = float(temperature)
        self.contrast_mode = contrast_mode
        self.base_temperature = float(base_temperature)
        self.normalize_feature = normalize_feature

    def forward(self, features: TensorOrDict, labels: paddle.Tensor) -> paddle.Tensor:
        feats = _pick(features, "features")
        if feats.shape[0] % self.views:
            raise ValueError(f"SupConLoss: batch {feats.shape[0]} is not a multiple of views={self.views}")
        if self.normalize_feature:
            feats = F.normalize(feats, p=2, axis=-1)
        num_ids = feats.shape[0] // self.views
        feats = feats.reshape([num_ids, self.views, -1])
        ids = labels.reshape([num_ids, self.views])[:, 0]
        # View-major stacking: row v * num_ids + i is view v of identity-slot i.
        contrast = feats.transpose([1, 0, 2]).reshape([num_ids * self.views, -1])
        contrast_ids = paddle.tile(ids, [self.views])
        if self.contrast_mode == "one":
            anchor, anchor_ids = feats[:, 0], ids
        else:
            anchor, anchor_ids = contrast, contrast_ids
        logits = paddle.matmul(anchor, contrast, transpose_y=True) / self.temperature
        logits = logits - logits.max(axis=1, keepdim=True).detach()
        n_anchor = anchor.shape[0]
        not_self = 1.0 - F.one_hot(paddle.arange(n_anchor), contrast.shape[0]).astype(logits.dtype)
        positive = (anchor_ids.unsqueeze(1) == contrast_ids.unsqueeze(0)).astype(logits.dtype) * not_self
        log_prob = logits - paddle.log((paddle.exp(logits) * not_self).sum(axis=1, keepdim=True))
        mean_log_prob_pos = (positive * log_prob).sum(axis=1) / paddle.clip(positive.sum(axis=1), min=1.0)
        return -(self.temperature / self.base_temperature) * mean_log_prob_pos.mean()
