"""PaddleClas-style ``weight_attr`` / ``bias_attr`` config values (``{initializer: {name, ...},
learning_rate, regularizer: {name, ...}}``, plus ``trainable``) as ``paddle.ParamAttr``."""
from __future__ import annotations

import copy
from typing import Any, Union

import paddle

from ppise.errors import ConfigError

_KEYS = ("initializer", "learning_rate", "regularizer", "trainable")


def param_attr_from_config(cfg: Any, where: str) -> Union[None, bool, paddle.ParamAttr]:
    """None/bool pass through (Paddle's meaning); a dict becomes a ParamAttr; errors name ``where``."""
    if cfg is None or isinstance(cfg, bool):
        return cfg
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where} must be null, a bool or a mapping, got {cfg!r}")
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(_KEYS)}")
    kwargs: dict = {}
    for key, module in (("initializer", paddle.nn.initializer), ("regularizer", paddle.regularizer)):
        if key not in cfg:
            continue
        sub = copy.deepcopy(cfg[key])
        if not isinstance(sub, dict) or "name" not in sub:
            raise ConfigError(f"{where}.{key} must be a mapping with a 'name', got {cfg[key]!r}")
        name = sub.pop("name")
        factory = getattr(module, str(name), None)
        if factory is None:
            raise ConfigError(f"{where}.{key}.name: unknown {key} {name!r} in {module.__name__}")
        try:
            kwargs[key] = factory(**sub)
        except TypeError as err:
            raise ConfigError(f"{where}.{key}: cannot build {name}: {err}") from err
    if "learning_rate" in cfg:
        lr = cfg["learning_rate"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise ConfigError(f"{where}.learning_rate must be a number, got {lr!r}")
        kwargs["learning_rate"] = float(lr)
    if "trainable" in cfg:
        if not isinstance(cfg["trainable"], bool):
            raise ConfigError(f"{where}.trainable must be true or false, got {cfg['trainable']!r}")
        kwargs["trainable"] = cfg["trainable"]
    return paddle.ParamAttr(**kwargs)
