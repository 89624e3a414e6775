"""A tiny name -> class registry so configs can name components (PaddleClas style).

A failed lookup, an unknown keyword or a wrongly typed value is a ConfigError naming the
config path, the registered names and the closest match, so callers need no try/except.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import typing
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

from .errors import ConfigError


def close_match(word: Any, options: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ``''``."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def split_spec(spec: Any, where: str) -> Tuple[str, Dict[str, Any]]:
    """``{name: X, a: 1}`` or ``{X: {a: 1}}`` (PaddleClas list style) -> ``(X, {a: 1})``."""
    if isinstance(spec, dict) and "name" in spec:
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    if isinstance(spec, dict) and len(spec) == 1:
        (name, kwargs), = spec.items()
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{where}.{name} must be a mapping of arguments, got {kwargs!r}")
        return name, dict(kwargs)
    raise ConfigError(f"{where} must be {{name: ..., args}} or {{Name: {{args}}}}, got {spec!r}")


_SIMPLE = (bool, int, float, str, list, dict)
# PaddleClas keys that ppise's components take and ignore (accepted with a warning).
PADDLECLAS_COMPONENT_KEYS = ("use_ssld", "pretrained", "grad_clip", "no_weight_decay_name",
                             "one_dim_param_no_weight_decay", "multi_precision", "last_epoch",
                             "backend")


def _accepted_types(hint: Any) -> Optional[tuple]:
    """The plain types a type hint allows (None: not checkable, accept anything)."""
    if typing.get_origin(hint) is typing.Union:
        parts = [(a,) if a is type(None) else _accepted_types(a) for a in typing.get_args(hint)]
        return None if None in parts else sum(parts, ())
    hint = typing.get_origin(hint) or hint
    return (hint,) if hint in _SIMPLE else None


def check_type(value: Any, types: tuple, path: str) -> None:
    """``value`` must be one of ``types`` (an int passes for a float, a bool never for an int)."""
    if isinstance(value, bool):
        ok = bool in types
    else:
        ok = isinstance(value, types) or (isinstance(value, int) and float in types)
    if not ok:
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise ConfigError(f"{path} must be {expected}, got {value!r} ({type(value).__name__})")


def check_arguments(factory: Callable[..., Any], kwargs: Dict[str, Any], where: str,
                    supplied: Sequence[str] = (), tolerated: Sequence[str] = (), warn=None) -> None:
    """Every key of ``kwargs`` must be a keyword of ``factory`` (``supplied`` ones come from the
    code, not the config) and match its annotated type, if any. Keys in ``tolerated`` (PaddleClas
    keys a factory takes through ``**kwargs`` and ignores) are passed on with a warning."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # noqa: BLE001 - an unresolvable annotation only disables type checks
        hints = {}
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and n not in ("self",) and n not in supplied]
    for key, value in kwargs.items():
        if key not in names:
            if key in tolerated:
                if warn:
                    warn(f"{where}.{key} is a PaddleClas key ppise does not use; ignored")
                continue
            raise ConfigError(f"{where}.{key}: unknown key{close_match(key, names)}; {where} accepts: {', '.join(names) or '(none)'}")
        types = _accepted_types(hints.get(key))
        if types is not None:
            check_type(value, types, f"{where}.{key}")


class Registry:
    """Maps a config name to a class or factory; one instance per component kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, Callable[..., Any]] = {}

    def register(self, obj: Optional[Callable[..., Any]] = None, name: Optional[str] = None):
        """Use as ``@REG.register`` or ``@REG.register(name="Alias")`` or ``REG.register(obj)``."""
        if obj is None:
            return functools.partial(self.register, name=name)
        key = name or obj.__name__
        if key in self._items and self._items[key] is not obj:
            raise KeyError(f"{self.kind} '{key}' is already registered")
        self._items[key] = obj
        return obj

    def get(self, name: Any, where: str = "") -> Callable[..., Any]:
        """The registered factory; an unknown name is a ConfigError listing what exists."""
        if not isinstance(name, str) or name not in self._items:
            loc = f"{where}: " if where else ""
            raise ConfigError(f"{loc}unknown {self.kind} '{name}'{close_match(name, self._items)}; "
                              f"registered: {', '.join(self.names()) or '(none)'}")
        return self._items[name]

    def resolve(self, spec: Any, where: str = "") -> Tuple[str, Callable[..., Any], Dict[str, Any], str]:
        """``(name, factory, kwargs, path of the arguments)`` of a spec (``{name: X, ...}``,
        ``{X: {...}}`` or a bare name); an unknown name fails at ``where.name`` or ``where``."""
        if isinstance(spec, str):
            return spec, self.get(spec, where), {}, where
        name, kwargs = split_spec(spec, where)
        named = "name" in spec
        return name, self.get(name, f"{where}.name" if named else where), kwargs, where if named else f"{where}.{name}"

    def build(self, spec: Any, where: str = "", *, tolerated: Sequence[str] = (),
              **supplied: Any) -> Any:
        """Build from a spec (see :meth:`resolve`) plus the arguments the code supplies; every
        config mistake is a ConfigError naming its config path. ``tolerated``: see
        :func:`check_arguments`."""
        name, factory, kwargs, at = self.resolve(spec, where)
        check_arguments(factory, kwargs, at, supplied=tuple(supplied), tolerated=tolerated)
        try:
            return factory(**kwargs, **supplied)
        except TypeError as err:
            raise ConfigError(f"{at}: cannot build {self.kind} '{name}': {err}") from None
        except (ValueError, ConfigError) as err:
            msg = str(err)
            raise ConfigError(msg if at and at in msg else f"{at}: {msg}") from None

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
OBJECTIVES = Registry("objective")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
SAMPLERS = Registry("sampler")
METRICS = Registry("metric")
OPTIMIZERS = Registry("optimizer")
LR_SCHEDULERS = Registry("lr scheduler")
