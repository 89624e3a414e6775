"""Build the losses of a config section (PaddleClas list-of-single-key-dicts form).

    Loss:
      Train:
        - ClusterMemoryLoss: {weight: 1.0, temperature: 0.05}
        - LabelPreservingLoss: {weight: 0.1}

Every mistake (unknown name, bad argument or value, malformed entry) is a ConfigError that
names the config path, e.g. ``Loss.Train[1].LabelPreservingLoss``.
"""
from __future__ import annotations

from typing import Any, Dict, List

import paddle.nn as nn

from ppise.errors import ConfigError
from ppise.registry import LOSSES

__all__ = ["build_losses"]


def build_losses(loss_cfg_list: List[Dict[str, Any]], where: str = "Loss.Train") -> Dict[str, nn.Layer]:
    """Return ``{name: loss layer}`` in config order; each layer carries its ``weight``."""
    if loss_cfg_list is None:
        return {}
    if not isinstance(loss_cfg_list, list):
        raise ConfigError(
            f"{where} must be a list of '- LossName: {{...}}' entries, got {type(loss_cfg_list).__name__}"
        )
    losses: Dict[str, nn.Layer] = {}
    for i, entry in enumerate(loss_cfg_list):
        path = f"{where}[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(
                f"{path} must be a single-key mapping like '- ClusterMemoryLoss: {{weight: 1.0}}', got {entry!r}"
            )
        (name, kwargs), = entry.items()
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{path}.{name} arguments must be a mapping, got {kwargs!r}")
        if name in losses:
            raise ConfigError(f"{path}: loss '{name}' is listed twice in {where}")
        if name not in LOSSES:
            raise ConfigError(
                f"{path}: unknown loss '{name}'; registered losses: {', '.join(LOSSES.names())}"
            )
        cls = LOSSES.get(name, where=path)
        try:
            losses[name] = cls(**kwargs)
        except TypeError as err:
            raise ConfigError(f"{path}.{name}: bad arguments {sorted(kwargs)}: {err}") from None
        except (ValueError, ConfigError) as err:
            raise ConfigError(f"{path}.{name}: {err}") from None
    return losses
