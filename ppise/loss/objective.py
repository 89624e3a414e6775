"""Training objectives: the loss side of a step, so the trainer names no loss.

An objective is assembled from the PaddleClas-style ``Loss.Train`` list (``build_objective``)::

    Loss:
      Train:
        - ClusterMemoryLoss: {weight: 1.0, num_features: 2048, temperature: 0.05, momentum: 0.2, update: hard}
        - ISESupport: {topk: 1, base_lambda: 1.0}       # optional: PLI supports join memory loss + update
        - LabelPreservingLoss: {weight: 0.1, temperature: 0.6}   # needs ISESupport

One ISE step (docs/design.md section 2): f -> s = ISESupport(f) ->
w_cc * CE(normalise([f; s]) . M^T / tau) + w_lp * LP(f, s); after the optimizer step the
memory moves towards the rows [f; s] (gathered over ranks).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn

from ppise.errors import ConfigError
from ppise.registry import LOSSES, OBJECTIVES
from ppise.utils import dist

from .cluster_memory import ClusterMemoryLoss
from .ise_support import ISESupport
from .label_preserving import LabelPreservingLoss

__all__ = ["Objective", "ClusterContrastObjective", "build_losses", "build_objective",
           "loss_entries"]


def loss_entries(loss_cfg_list: Any, where: str = "Loss.Train") -> List[Tuple[str, Dict[str, Any], str]]:
    """``[(name, kwargs, config path)]`` of a PaddleClas loss list, checked for shape and duplicates."""
    if loss_cfg_list is None:
        return []
    if not isinstance(loss_cfg_list, list):
        raise ConfigError(f"{where} must be a list of '- LossName: {{...}}' entries, got {type(loss_cfg_list).__name__}")
    entries: List[Tuple[str, Dict[str, Any], str]] = []
    for i, entry in enumerate(loss_cfg_list):
        path = f"{where}[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"{path} must be a single-key mapping like '- ClusterMemoryLoss: {{weight: 1.0}}', got {entry!r}")
        (name, kwargs), = entry.items()
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{path}.{name} arguments must be a mapping, got {kwargs!r}")
        if name in [e[0] for e in entries]:
            raise ConfigError(f"{path}: loss '{name}' is listed twice in {where}")
        entries.append((name, dict(kwargs), path))
    return entries


def build_losses(loss_cfg_list: Any, where: str = "Loss.Train") -> Dict[str, nn.Layer]:
    """Return ``{name: loss layer}`` in config order; each layer carries its ``weight``."""
    return {name: LOSSES.build({name: kwargs}, where=path) for name, kwargs, path in loss_entries(loss_cfg_list, where)}


class Objective(nn.Layer):
    """``losses`` returns weighted losses keyed ``loss_*``; ``metrics`` holds the last step's
    extra figures for logging (e.g. ``alpha``)."""

    needs_clusters: bool = True  # False: the trainer feeds the dataset's identities as classes 0..C-1
    components: Tuple[str, ...] = ()  # the Loss.Train names it is assembled from (register in OBJECTIVES)

    def __init__(self) -> None:
        super().__init__()
        self.metrics: Dict[str, float] = {}

    @classmethod
    def from_config(cls, loss_cfg_list: List[Dict[str, Any]], where: str = "Loss.Train") -> "Objective":
        """Build from the ``Loss.Train`` list: each listed loss becomes the keyword of its name."""
        return cls(**build_losses(loss_cfg_list, where=where))

    def reset(self, centroids: Optional[np.ndarray]) -> None:
        """Start a new epoch with these cluster centroids (None when supervised)."""

    def losses(self, outputs: Dict[str, paddle.Tensor], labels: paddle.Tensor, progress: float) -> Dict[str, paddle.Tensor]:
        raise NotImplementedError

    def update(self) -> None:
        """After ``optimizer.step``: update internal state from the last ``losses`` call."""

    def state_dict(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:  # noqa: D401 - paddle's name
        """Everything needed to resume (numpy arrays or plain values)."""
        return {}

    def set_state_dict(self, state: Dict[str, Any], *args: Any, **kwargs: Any) -> None:
        pass


@OBJECTIVES.register
class ClusterContrastObjective(Objective):
    """Cluster contrast (ClusterMemoryLoss), optionally with ISE supports and the LP loss."""

    components = ("ClusterMemoryLoss", "ISESupport", "LabelPreservingLoss")

    def __init__(self, ClusterMemoryLoss: ClusterMemoryLoss, ISESupport: Optional[ISESupport] = None,  # noqa: N803
                 LabelPreservingLoss: Optional[LabelPreservingLoss] = None) -> None:  # noqa: N803
        super().__init__()
        if LabelPreservingLoss is not None and ISESupport is None:
            raise ConfigError("Loss.Train: LabelPreservingLoss needs ISESupport (it compares instances with their "
                              "support samples); add '- ISESupport: {topk: 1, base_lambda: 1.0}' or remove it")
        self.memory = ClusterMemoryLoss
        self.support = ISESupport
        self.lp = LabelPreservingLoss
        self._rows: Optional[Tuple[paddle.Tensor, paddle.Tensor]] = None

    def reset(self, centroids: Optional[np.ndarray]) -> None:
        self.memory.reset(centroids)
        self._rows = None

    def losses(self, outputs: Dict[str, paddle.Tensor], labels: paddle.Tensor, progress: float) -> Dict[str, paddle.Tensor]:
        f = outputs["features"]
        labels = labels.reshape([-1]).astype("int64")
        sim = self.memory.similarity(f)  # [B, C]: the memory logits, reused by the support search
        rows, row_labels = f, labels
        if self.support is not None:
            s, ys, alpha = self.support(f, labels, self.memory.memory, progress, similarity=sim)
            self.metrics["alpha"] = float(alpha)
            rows = paddle.concat([f, s.astype(f.dtype)], axis=0)
            row_labels = paddle.concat([labels, ys], axis=0)
            sim = paddle.concat([sim, self.memory.similarity(s)], axis=0)
        losses = {"loss_cc": self.memory(rows, row_labels, similarity=sim) * self.memory.weight}
        if self.lp is not None:
            losses["loss_lp"] = self.lp(f, s, labels, ys) * self.lp.weight
        self._rows = (rows.detach(), row_labels)
        return losses

    @paddle.no_grad()
    def update(self) -> None:
        """Momentum update of the memory with the rows that entered the loss, from every rank."""
        if self._rows is None:
            return
        x, y = self._rows
        self.memory.update(dist.all_gather(x), dist.all_gather(y))
        self._rows = None

    def state_dict(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        return {"memory": self.memory.memory_state()}

    def set_state_dict(self, state: Dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if state.get("memory") is not None:
            self.memory.set_memory_state(state["memory"])


def build_objective(loss_cfg_list: Any, where: str = "Loss.Train") -> Objective:
    """The objective whose components are the names listed in ``Loss.Train``; beside
    ClusterMemoryLoss, a loss that needs true labels is a ConfigError naming its key."""
    entries = loss_entries(loss_cfg_list, where)
    names = [name for name, _, _ in entries]
    if not entries:
        raise ConfigError(f"{where} is empty: list the losses to train with, e.g. '- ClusterMemoryLoss: {{weight: 1.0}}'")
    if "ClusterMemoryLoss" in names:
        cls = ClusterContrastObjective
        for name, _, path in entries:
            if name not in cls.components:
                raise ConfigError(
                    f"{path}.{name} cannot be part of a cluster-contrast objective (training without labels); "
                    f"it takes only {', '.join(cls.components)}. Remove {path}, or train supervised without ClusterMemoryLoss")
        return cls.from_config(loss_cfg_list, where)
    for name in OBJECTIVES.names():  # importing ppise.loss registered them all (supervised.py too)
        cls = OBJECTIVES.get(name)
        if set(names) <= set(cls.components):
            return cls.from_config(loss_cfg_list, where)
    known = "; ".join(f"{n}: {', '.join(OBJECTIVES.get(n).components)}" for n in OBJECTIVES.names())
    raise ConfigError(f"{where}: no training objective is made of {', '.join(names)}; objectives and their losses: {known}")
