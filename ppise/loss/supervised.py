"""PaddleClas's strong-baseline re-ID training with true labels: SupervisedObjective and the
losses named in PaddleClas's configs (CELoss, SupConLoss; TripletLossV2 is in triplet.py).

Assembled from the PaddleClas list form of ``Loss.Train``::

    Loss:
      Train:
        - CELoss: {weight: 1.0, epsilon: 0.1}                          # on outputs["logits"] (FC head)
        - TripletLossV2: {weight: 1.0, margin: 0.3, feature_from: features}  # outputs["features"] (default "backbone")

``needs_clusters`` is False: the trainer feeds the dataset's own identities and never
re-clusters. ``losses`` returns the weighted terms ``loss_ce`` / ``loss_triplet`` / ``loss_supcon``.
Each loss takes a tensor or PaddleClas's output dict and returns an unweighted scalar.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppise.errors import ConfigError
from ppise.registry import LOSSES, OBJECTIVES
from ppise.utils.arrays import l2_normalize

from .objective import Objective, build_losses
from .triplet import TripletLossV2

TensorOrDict = Union[paddle.Tensor, Dict[str, paddle.Tensor]]

__all__ = ["CELoss", "SupConLoss", "SupervisedObjective", "SUPERVISED_LOSSES", "class_labels"]


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

    def __init__(self, weight: float = 1.0, views: int = 16, temperature: float = 0.07,
                 contrast_mode: str = "all", base_temperature: float = 0.07,
                 normalize_feature: bool = True) -> None:
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
            feats = l2_normalize(feats)
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


# loss name -> (what it reads, key of the weighted term); "outputs": the whole output dict,
# the loss picks its key (TripletLossV2.feature_from: backbone | features)
SUPERVISED_LOSSES: Dict[str, tuple] = {
    "CELoss": ("logits", "loss_ce"),
    "TripletLossV2": ("outputs", "loss_triplet"),
    "SupConLoss": ("outputs", "loss_supcon"),
}


def class_labels(person_ids: np.ndarray, class_num: Optional[int] = None,
                 where: str = "Arch.Head.class_num") -> np.ndarray:
    """Raw person ids of the training images (e.g. 1001..1200) -> classes 0..C-1; ``class_num``
    (the FC head's size) must equal the number of identities, as in PaddleClas's configs."""
    ids = np.asarray(person_ids).reshape(-1)
    if ids.size == 0:
        raise ConfigError("the training set has no images to take labels from")
    if (ids < 0).any():
        raise ConfigError("the training set holds images with a negative (junk) person id; a supervised run "
                          "needs every training image labelled")
    uniq, classes = np.unique(ids, return_inverse=True)
    if class_num is not None and int(class_num) != uniq.size:
        raise ConfigError(f"{where}={class_num} but the training set has {uniq.size} identities; "
                          f"set -o {where}={uniq.size}")
    return classes.astype(np.int64)


@OBJECTIVES.register
class SupervisedObjective(Objective):
    """Weighted sum of label-supervised losses; no clustering, no memory."""

    needs_clusters = False
    components = tuple(SUPERVISED_LOSSES)  # build_objective picks it for a Loss.Train of these names

    def __init__(self, losses: Dict[str, paddle.nn.Layer]) -> None:
        super().__init__()
        if not losses:
            raise ConfigError("Loss.Train: a supervised run needs at least one of " + ", ".join(SUPERVISED_LOSSES))
        for name, layer in losses.items():
            if name not in SUPERVISED_LOSSES:
                raise ConfigError(f"Loss.Train: {name} is not a supervised loss; a run with true labels takes "
                                  f"{', '.join(SUPERVISED_LOSSES)} (cluster losses need a Cluster section)")
            if not isinstance(layer, (CELoss, TripletLossV2, SupConLoss)):
                raise ConfigError(f"Loss.Train: {name} built as {type(layer).__name__}")
        self.names: List[str] = list(losses)
        self.terms = paddle.nn.LayerDict(losses)

    @classmethod
    def from_config(cls, loss_cfg_list: List[Dict[str, Any]], where: str = "Loss.Train") -> "SupervisedObjective":
        return cls(build_losses(loss_cfg_list, where=where))

    def reset(self, centroids: Optional[np.ndarray] = None) -> None:
        """Nothing to reset: supervised training keeps no cluster memory (nor updates one)."""

    def losses(self, outputs: Dict[str, paddle.Tensor], labels: paddle.Tensor, progress: float = 0.0) -> Dict[str, paddle.Tensor]:
        labels = labels.reshape([-1]).astype("int64")
        out: Dict[str, paddle.Tensor] = {}
        for name in self.names:
            layer = self.terms[name]
            key, term = SUPERVISED_LOSSES[name]
            if key == "logits" and "logits" not in outputs:
                raise ConfigError(f"Loss.Train.{name} needs class logits: give the model a classifier head "
                                  f"(Arch.Head: {{name: FC, embedding_size: <Neck.num_features>, class_num: <train ids>}})")
            if key == "logits":
                logits = outputs["logits"]
                if int(labels.max()) >= logits.shape[-1]:
                    raise ConfigError(f"Loss.Train.{name}: label {int(labels.max())} >= Arch.Head.class_num "
                                      f"{logits.shape[-1]}; set class_num to the number of training identities")
                value = layer(logits, labels)
            else:
                value = layer(outputs, labels)
            out[term] = value * layer.weight
        return out
