"""A tiny name -> class registry so configs can name components (PaddleClas style)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional


class Registry:
    """Maps a config name to a class or factory; one instance per component kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, Callable[..., Any]] = {}

    def register(self, obj: Optional[Callable[..., Any]] = None, name: Optional[str] = None):
        """Use as ``@REG.register`` or ``@REG.register(name="Alias")`` or ``REG.register(obj)``."""

        def _add(item: Callable[..., Any]) -> Callable[..., Any]:
            key = name or item.__name__
            if key in self._items and self._items[key] is not item:
                raise KeyError(f"{self.kind} '{key}' is already registered")
            self._items[key] = item
            return item

        if obj is None:
            return _add
        return _add(obj)

    def get(self, name: str, where: str = "") -> Callable[..., Any]:
        if name not in self._items:
            loc = f" (at {where})" if where else ""
            raise KeyError(
                f"unknown {self.kind} '{name}'{loc}; registered: {', '.join(self.names()) or '(none)'}"
            )
        return self._items[name]

    def build(self, name: str, where: str = "", **kwargs: Any) -> Any:
        """Instantiate ``name`` with ``kwargs``; a bad argument names the config path."""
        cls = self.get(name, where)
        try:
            return cls(**kwargs)
        except TypeError as err:
            loc = where or name
            raise TypeError(f"cannot build {self.kind} '{name}' from config {loc}: {err}") from err

    def names(self) -> Iterable[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names())})"


BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
LOSSES = Registry("loss")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
SAMPLERS = Registry("sampler")
METRICS = Registry("metric")
HOOKS = Registry("hook")
OPTIMIZERS = Registry("optimizer")
LR_SCHEDULERS = Registry("lr scheduler")
