"""SupervisedObjective: PaddleClas's strong-baseline re-ID training with true labels.

Assembled from the PaddleClas list form of ``Loss.Train``::

    Loss:
      Train:
        - CELoss: {weight: 1.0, epsilon: 0.1}                          # on outputs["logits"] (FC head)
        - TripletLossV2: {weight: 1.0, margin: 0.3, feature_from: features}  # outputs["features"] (default "backbone")

``needs_clusters`` is False: the trainer feeds the dataset's own identities and never
re-clusters. ``losses`` returns the weighted terms ``loss_ce`` / ``loss_triplet`` / ``loss_supcon``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import paddle

from ppise.errors import ConfigError
from ppise.registry import OBJECTIVES

from .objective import Objective, build_losses
from .paddleclas_compat import CELoss, SupConLoss
from .triplet import TripletLossV2

__all__ = ["SupervisedObjective", "SUPERVISED_LOSSES", "class_labels"]

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
        """Nothing to reset: supervised training keeps no cluster memory (``update`` does nothing either)."""

    def losses(self, outputs: Dict[str, paddle.Tensor], labels: paddle.Tensor, progress: float = 0.0) -> Dict[str, paddle.Tensor]:
        labels = labels.reshape([-1]).astype("int64")
        out: Dict[str, paddle.Tensor] = {}
        for name in self.names:
            layer = self.terms[name]
            key, term = SUPERVISED_LOSSES[name]
            if key == "logits":
                if "logits" not in outputs:
                    raise ConfigError(f"Loss.Train.{name} needs class logits: give the model a classifier head (Arch.Head: "
                                      f"{{name: FC, embedding_size: <Neck.num_features>, class_num: <train ids>}})")
                logits = outputs["logits"]
                if int(labels.max()) >= logits.shape[-1]:
                    raise ConfigError(f"Loss.Train.{name}: label {int(labels.max())} >= Arch.Head.class_num "
                                      f"{logits.shape[-1]}; set class_num to the number of training identities")
                value = layer(logits, labels)
            else:
                value = layer(outputs, labels)
            out[term] = value * layer.weight
        return out
