"""PaddleClas-style YAML config: load, ``-o Section.key.sub=value`` overrides, validation.

Override values are typed with ``yaml.safe_load`` (never ``eval``), so ``-o a=3`` is an int,
``-o a=[1,2]`` a list and ``-o a=null`` None. Every error names the file or key path.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from .errors import ConfigError

SECTIONS = ("Global", "Arch", "Loss", "Optimizer", "DataLoader", "Metric", "Cluster", "Infer")

# Global keys ppise reads: name -> (allowed types, default). PaddleClas keys ppise ignores
# are accepted from YAML with a warning so official configs load unchanged.
_NONE = type(None)
GLOBAL_SCHEMA: Dict[str, Tuple[tuple, Any]] = {
    "checkpoints": ((str, _NONE), None),
    "pretrained_model": ((str, _NONE), None),
    "output_dir": ((str,), "./output/"),
    "device": ((str,), "cpu"),
    "seed": ((int, _NONE), 0),
    "epochs": ((int,), 1),
    "save_interval": ((int,), 1),
    "eval_during_train": ((bool,), True),
    "eval_interval": ((int,), 1),
    "print_batch_step": ((int,), 10),
    "use_visualdl": ((bool,), False),
    "image_shape": ((list,), [3, 256, 128]),
    "save_inference_dir": ((str,), "./inference"),
    "export_format": ((str,), "pir"),
    "eval_mode": ((str,), "retrieval"),
    "eval_protocol": ((str,), "market"),
    "feature_normalize": ((bool,), True),
    "save_features": ((str, _NONE), None),
    "cpu_threads": ((int, _NONE), None),
    "use_mkldnn": ((bool, _NONE), None),
    "overwrite": ((bool,), False),
    "infer_imgs": ((str, _NONE), None),
    "synthetic_dataset": ((dict, _NONE), None),
    "sim_block_size": ((int,), 64),
}
CHOICES = {
    "Global.device": ("cpu", "gpu"),
    "Global.eval_protocol": ("market", "paddleclas"),
    "Global.export_format": ("pir", "legacy"),
    "Global.eval_mode": ("retrieval",),
}
CLUSTER_DEFAULTS: Dict[str, Any] = {
    "k1": 30,
    "k2": 6,
    "eps": 0.6,
    "min_samples": 4,
    "knn": "exact",
    "device": "cpu",
    "gemm": "auto",  # exact kNN matrix products: auto (fastest measured) | numpy | paddle (ppise.cluster.gemm_backend)
}


class _Loader(yaml.SafeLoader):
    """SafeLoader as users expect it: ``1e-4`` is a float (YAML 1.2), a date-like text stays text."""


_Loader.yaml_implicit_resolvers = {  # no implicit timestamps: '2001-02-30' would raise ValueError
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
# What a malformed document can raise from inside PyYAML besides YAMLError: explicit tags
# with bad values (!!int x -> ValueError, !!timestamp x -> AttributeError), very deep nesting.
_YAML_FAILURES = (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError, RecursionError)


def _safe_load(text: Any) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def load_yaml(path: str) -> Dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a ConfigError naming it."""
    if not path or not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path!r}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = _safe_load(f)
    except _YAML_FAILURES as err:
        raise ConfigError(f"config file {path} is not valid YAML: {type(err).__name__}: {str(err)[:500]}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> Tuple[List[str], Any]:
    """Split ``Section.key.0.sub=value`` into a key path and a safely typed value."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"override {text!r} must look like Section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(p.strip() == "" for p in parts):
        raise ConfigError(f"override {text!r}: empty key name in {key!r}")
    try:
        value = _safe_load(raw) if raw.strip() != "" else ""
    except _YAML_FAILURES:
        value = raw  # not YAML (e.g. a path with ': ', '!!int x'), keep the plain string
    return [p.strip() for p in parts], value


def _index(container: list, part: str, path: str) -> int:
    try:
        idx = int(part)
    except ValueError:
        raise ConfigError(f"override {path}: '{part}' must be a list index (the value there is a list)") from None
    if not -len(container) <= idx < len(container):
        raise ConfigError(f"override {path}: index {idx} is out of range (list has {len(container)} items)")
    return idx


def apply_override(cfg: Dict[str, Any], text: str) -> None:
    """Set one override in place; only leaf keys may be new (Global keys must be known)."""
    parts, value = parse_override(text)
    path = ".".join(parts)
    if parts[0] not in SECTIONS:
        raise ConfigError(f"override {path}: unknown section '{parts[0]}'{_suggest(parts[0], SECTIONS)}; sections: {', '.join(SECTIONS)}")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_index(node, part, path)]
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                if depth == 0:
                    node[part] = {}
                else:
                    raise ConfigError(f"override {path}: key '{here}' does not exist{_suggest(part, node.keys())}")
            node = node[part]
        else:
            raise ConfigError(f"override {path}: '{here}' holds a {type(node).__name__}, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, path)] = value
    elif isinstance(node, dict):
        if parts[0] == "Global" and len(parts) == 2:
            if last not in GLOBAL_SCHEMA and last not in node:
                raise ConfigError(f"override {path}: unknown Global key '{last}'{_suggest(last, GLOBAL_SCHEMA)}")
            if str in GLOBAL_SCHEMA.get(last, ((),))[0] and isinstance(value, (dict, list)):
                value = text.split("=", 1)[1].strip()  # a path such as 'a: b' is meant literally
        node[last] = value
    else:
        raise ConfigError(f"override {path}: parent holds a {type(node).__name__}, not a section")


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(types: tuple) -> str:
    return " or ".join("null" if t is _NONE else t.__name__ for t in types)


def _check_type(value: Any, types: tuple, path: str) -> None:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{path} must be {_type_name(types)}, got {value!r} ({type(value).__name__})")


def validate(cfg: Dict[str, Any], warn=None) -> Dict[str, Any]:
    """Check sections and Global types, fill defaults; returns the same dict."""
    for section in cfg:
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section '{section}'{_suggest(section, SECTIONS)}; sections: {', '.join(SECTIONS)}")
        if cfg[section] is not None and not isinstance(cfg[section], (dict, list)):
            raise ConfigError(f"section {section} must be a mapping, got {cfg[section]!r}")
    glob = cfg.get("Global") or {}
    if not isinstance(glob, dict):
        raise ConfigError(f"section Global must be a mapping of keys, got {glob!r}")
    cfg["Global"] = glob
    for key, value in list(glob.items()):
        if key not in GLOBAL_SCHEMA:
            if warn:
                warn(f"Global.{key} is not used by ppise{_suggest(key, GLOBAL_SCHEMA)}")
            continue
        _check_type(value, GLOBAL_SCHEMA[key][0], f"Global.{key}")
    for key, (_, default) in GLOBAL_SCHEMA.items():
        glob.setdefault(key, copy.deepcopy(default))
    for path, options in CHOICES.items():
        value = get(cfg, path)
        if value not in options:
            raise ConfigError(f"{path} must be one of {', '.join(options)}, got {value!r}")
    shape = glob["image_shape"]
    if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise ConfigError(f"Global.image_shape must be [C, H, W] positive ints, got {shape!r}")
    for key in ("epochs", "save_interval", "eval_interval", "print_batch_step"):
        if glob[key] < 1:
            raise ConfigError(f"Global.{key} must be >= 1, got {glob[key]!r}")
    cluster = cfg.get("Cluster")
    if cluster is not None:
        if not isinstance(cluster, dict):
            raise ConfigError(f"section Cluster must be a mapping, got {cluster!r}")
        for key, default in CLUSTER_DEFAULTS.items():
            cluster.setdefault(key, default)
            _check_type(cluster[key], (type(default),) if not isinstance(default, float) else (float, int), f"Cluster.{key}")
        if not cluster["eps"] > 0:  # also refuses nan
            raise ConfigError(f"Cluster.eps must be > 0 (the DBSCAN radius on Jaccard distances), got {cluster['eps']!r}")
        for key in ("k1", "k2", "min_samples"):
            if cluster[key] < 1:
                raise ConfigError(f"Cluster.{key} must be >= 1, got {cluster[key]!r}")
    return cfg


def get(cfg: Dict[str, Any], path: str, default: Any = ConfigError) -> Any:
    """Read ``A.b.0.c``; without a default a missing key raises ConfigError naming the path."""
    node: Any = cfg
    for part in path.split("."):
        idx = _as_int(part) if isinstance(node, list) else None
        if idx is not None and -len(node) <= idx < len(node):
            node = node[idx]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            if default is ConfigError:
                raise ConfigError(f"missing required config key {path}")
            return default
    return node


def _as_int(text: str) -> Optional[int]:
    try:
        return int(text)
    except ValueError:
        return None


def require(cfg: Dict[str, Any], *paths: str) -> None:
    for path in paths:
        get(cfg, path)


def get_config(path: str, overrides: Optional[Sequence[str]] = None, warn=None) -> Dict[str, Any]:
    """Load ``path``, apply ``-o`` overrides in order, validate."""
    cfg = load_yaml(path)
    for text in overrides or []:
        apply_override(cfg, text)
    return validate(cfg, warn=warn)


def dump(cfg: Dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, default_flow_style=None)


def save(cfg: Dict[str, Any], out_dir: str, name: str = "config.yaml") -> str:
    """Write the resolved config next to the run's outputs (atomically)."""
    os.makedirs(out_dir, exist_ok=True)
    dst = os.path.join(out_dir, name)
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(dump(cfg))
    os.replace(tmp, dst)
    return dst


def component(spec: Any, path: str) -> Tuple[str, Dict[str, Any]]:
    """Split ``{name: X, a: 1}`` or ``{X: {a: 1}}`` (PaddleClas list style) into (name, kwargs)."""
    if isinstance(spec, dict) and "name" in spec:
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        return spec["name"], kwargs
    if isinstance(spec, dict) and len(spec) == 1:
        (name, kwargs), = spec.items()
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{path}.{name} must be a mapping of arguments, got {kwargs!r}")
        return name, dict(kwargs)
    raise ConfigError(f"{path} must be {{name: ..., args}} or {{Name: {{args}}}}, got {spec!r}")
