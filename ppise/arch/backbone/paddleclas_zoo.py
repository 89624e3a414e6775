"""Fallback: any backbone of PaddleClas's model zoo (``ResNet18``, ``PPLCNet_x0_25``, ...) by the
name ppise's registry lacks. paddleclas is imported only here and only when such a name is
asked for, so the rest of ppise never pays for (or depends on) importing it.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, List, Optional

import paddle.nn as nn

from ppise.errors import ConfigError


def _zoo_module() -> Optional[Any]:
    try:
        import paddleclas.ppcls.arch.backbone as zoo  # noqa: WPS433 (lazy on purpose)
    except Exception:  # paddleclas missing or broken: the fallback is simply unavailable
        return None
    return zoo


def _is_builder(obj: Any) -> bool:
    return issubclass(obj, nn.Layer) if inspect.isclass(obj) else inspect.isfunction(obj)


def find_paddleclas_backbone(name: str) -> Optional[Callable[..., nn.Layer]]:
    """The PaddleClas class or factory called ``name``, or None if absent / paddleclas not importable."""
    if not name or name.startswith("_"):
        return None
    zoo = _zoo_module()
    obj = getattr(zoo, name, None) if zoo is not None else None
    return obj if obj is not None and _is_builder(obj) else None


def close_paddleclas_names(name: str, n: int = 5) -> List[str]:
    """The public backbone builders of PaddleClas closest to ``name`` (none without paddleclas)."""
    zoo = _zoo_module()
    builders = vars(zoo).items() if zoo is not None else ()
    names = sorted(k for k, obj in builders if k[:1].isupper() and _is_builder(obj))
    return difflib.get_close_matches(name, names, n=n, cutoff=0.6)


def build_paddleclas_backbone(builder: Callable[..., nn.Layer], name: str, kwargs: dict, where: str) -> nn.Layer:
    """Call a PaddleClas builder with ``pretrained=False`` (ppise loads weights itself, offline)."""
    params = inspect.signature(builder).parameters
    if "pretrained" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = dict(kwargs, pretrained=False)
    try:
        model = builder(**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as err:
        raise ConfigError(f"cannot build PaddleClas backbone '{name}' from config {where}: {err}") from err
    if not isinstance(model, nn.Layer):
        raise ConfigError(f"{where}.name: PaddleClas '{name}' is not a backbone builder (it returned {type(model).__name__})")
    return model
