"""TripletLossV2: PaddleClas's batch-hard triplet loss (strong-baseline re-ID recipe).

For every anchor of a P x K batch: the farthest sample of its own identity (hardest
positive) and the nearest sample of another identity (hardest negative), then the margin
ranking hinge ``mean(max(0, d(a, p) - d(a, n) + margin))`` over anchors, with Euclidean
distances (of L2-normalised features when ``normalize_feature``). PaddleClas's keys and
defaults; ``feature_from`` (PaddleClas's code: ``feat_from``, both work) is ``backbone``, the
pre-neck embedding, or ``features``, the BNNeck output. Returns an unweighted scalar.
"""
from __future__ import annotations

from typing import Dict, Optional, Union

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppise.errors import ConfigError
from ppise.registry import LOSSES
from ppise.utils.arrays import l2_normalize

__all__ = ["TripletLossV2", "batch_hard_distances"]

_FEATURE_KEYS = ("features", "backbone")


def batch_hard_distances(feats: paddle.Tensor, labels: paddle.Tensor):
    """``(dist_ap, dist_an)``, each ``[B]``: hardest positive and negative distance per anchor; an
    anchor alone with its identity gets ``d(a, a) = 0``; a single-identity batch is an error."""
    labels = labels.reshape([-1])
    sq = (feats * feats).sum(axis=1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * paddle.matmul(feats, feats, transpose_y=True)
    dist = paddle.clip(d2, min=1e-12).sqrt()
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    if bool(same.all()):
        raise ValueError("TripletLossV2: the batch holds a single identity, there is no negative; use a P x K sampler")
    big = dist.max().detach() + 1.0
    dist_ap = paddle.where(same, dist, paddle.zeros_like(dist)).max(axis=1)
    dist_an = paddle.where(same, dist + big, dist).min(axis=1)
    return dist_ap, dist_an


@LOSSES.register
class TripletLossV2(nn.Layer):
    """Hard-mining triplet loss with margin (PaddleClas ``TripletLossV2``)."""

    def __init__(self, weight: float = 1.0, margin: float = 0.5, normalize_feature: bool = True,
                 feature_from: Optional[str] = None, feat_from: Optional[str] = None) -> None:
        super().__init__()
        if not isinstance(margin, (int, float)) or isinstance(margin, bool) or margin < 0:
            raise ConfigError(f"TripletLossV2: margin must be a number >= 0, got {margin!r}")
        if feature_from is not None and feat_from is not None and feature_from != feat_from:
            raise ConfigError(f"TripletLossV2: feature_from={feature_from!r} and feat_from={feat_from!r} disagree")
        source = feature_from if feature_from is not None else feat_from
        if source is not None and source not in _FEATURE_KEYS:
            raise ConfigError(f"TripletLossV2: feature_from must be one of {_FEATURE_KEYS}, got {source!r}")
        self.weight = float(weight)
        self.margin = float(margin)
        self.normalize_feature = bool(normalize_feature)
        # PaddleClas's default reads the pre-neck embedding ("backbone"); "features" is the
        # BNNeck output (the retrieval feature). A plain tensor input is used as it is.
        self.feature_from = source or "backbone"

    def forward(self, features: Union[paddle.Tensor, Dict[str, paddle.Tensor]], labels: paddle.Tensor) -> paddle.Tensor:
        if isinstance(features, dict) and self.feature_from not in features:
            raise KeyError(f"TripletLossV2: output dict has no '{self.feature_from}' "
                           f"(keys: {sorted(features)})")
        feats = features[self.feature_from] if isinstance(features, dict) else features
        if feats.ndim > 2:
            feats = paddle.flatten(feats, start_axis=1)
        if self.normalize_feature:
            feats = l2_normalize(feats)
        dist_ap, dist_an = batch_hard_distances(feats, labels)
        return F.relu(dist_ap - dist_an + self.margin).mean()
