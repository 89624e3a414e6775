"""Build the losses of a PaddleClas list (``- ClusterMemoryLoss: {weight: 1.0}`` entries); every
mistake is a ConfigError naming its config path, e.g. ``Loss.Train[1].LabelPreservingLoss``."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import paddle.nn as nn

from ppise.errors import ConfigError
from ppise.registry import LOSSES

__all__ = ["build_losses", "loss_entries"]


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
