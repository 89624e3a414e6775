"""Deploy config (PaddleClas ``deploy/configs/inference_rec.yaml`` style): load, ``-o``, check.

The training config's loader only knows training sections, so the deploy side has its own
small schema: ``Global`` (predictor options, PaddleClas key names), ``RecPreProcess``,
``RecPostProcess`` and ``IndexProcess`` (gallery index). Overrides reuse ppise's safe
``-o`` parser; an unknown key given with ``-o`` is an error naming it, an unknown key in
the YAML file only a warning (PaddleClas deploy files carry keys ppise does not use).
"""
from __future__ import annotations

import copy
import difflib
from typing import Any, Dict, Optional, Sequence, Tuple

from ..config import load_yaml, parse_override
from ..errors import ConfigError

_NONE = type(None)
# section -> key -> (allowed types, default)
SCHEMA: Dict[str, Dict[str, Tuple[tuple, Any]]] = {
    "Global": {
        "infer_imgs": ((str, _NONE), None),
        "inference_model_dir": ((str, _NONE), "./inference/ise_demo"),
        "rec_inference_model_dir": ((str, _NONE), None),  # PaddleClas's name, an alias
        "batch_size": ((int,), 32),
        "use_gpu": ((bool,), False),
        "gpu_mem": ((int,), 8000),
        "gpu_id": ((int,), 0),
        "enable_mkldnn": ((bool,), True),
        "cpu_num_threads": ((int,), 2),
        "use_tensorrt": ((bool,), False),
        "use_fp16": ((bool,), False),
        "ir_optim": ((bool,), True),
        "output_dir": ((str,), "./output/deploy"),
    },
    "RecPreProcess": {
        "transform_ops": ((list, _NONE), None),
    },
    "RecPostProcess": {
        "feature_normalize": ((bool,), True),
    },
    "IndexProcess": {
        "index_dir": ((str,), "./output/deploy/gallery_index"),
        "image_root": ((str, _NONE), None),
        "data_file": ((str, _NONE), None),
        "delimiter": ((str, _NONE), None),
        "naming": ((str,), "market"),
        "index_method": ((str,), "Flat"),
        "nlist": ((int,), 100),
        "nprobe": ((int,), 10),
        "hnsw_m": ((int,), 32),
        "ef_construction": ((int,), 40),
        "ef_search": ((int,), 64),
        "return_k": ((int,), 10),
        "score_thres": ((float, int, _NONE), None),
    },
}
CHOICES = {
    ("IndexProcess", "naming"): ("market", "none"),
    ("IndexProcess", "index_method"): ("Flat", "IVF", "HNSW"),
}
POSITIVE = (("Global", "batch_size"), ("Global", "cpu_num_threads"), ("Global", "gpu_mem"),
            ("IndexProcess", "nlist"), ("IndexProcess", "nprobe"), ("IndexProcess", "hnsw_m"),
            ("IndexProcess", "ef_construction"), ("IndexProcess", "ef_search"), ("IndexProcess", "return_k"))


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(types: tuple) -> str:
    return " or ".join("null" if t is _NONE else t.__name__ for t in types)


def _set(cfg: Dict[str, Any], text: str) -> None:
    parts, value = parse_override(text)
    path = ".".join(parts)
    section = parts[0]
    if section not in SCHEMA:
        raise ConfigError(f"override {path}: unknown deploy section '{section}'{_suggest(section, SCHEMA)}; "
                          f"sections: {', '.join(SCHEMA)}")
    if cfg.get(section) is None:
        cfg[section] = {}
    node = cfg[section]
    if not isinstance(node, dict):
        raise ConfigError(f"override {path}: section {section} holds {node!r}, not a mapping")
    if len(parts) < 2:
        raise ConfigError(f"override {path}: give a key, e.g. {section}.{next(iter(SCHEMA[section]))}=...")
    key = parts[1]
    if key not in SCHEMA[section]:
        raise ConfigError(f"override {path}: unknown key '{key}'{_suggest(key, SCHEMA[section])}; "
                          f"{section} keys: {', '.join(SCHEMA[section])}")
    if len(parts) == 2:
        types = SCHEMA[section][key][0]
        if str in types and not isinstance(value, types):  # a path such as '1501' or 'a: b' is meant literally
            value = text.split("=", 1)[1].strip()
        node[key] = value
        return
    sub = node.get(key)
    for depth, part in enumerate(parts[2:-1], start=2):
        sub = _child(sub, part, path, ".".join(parts[:depth + 1]))
    last = parts[-1]
    if isinstance(sub, list):
        sub[_list_index(sub, last, path)] = value
    elif isinstance(sub, dict):
        sub[last] = value
    else:
        raise ConfigError(f"override {path}: {'.'.join(parts[:-1])} holds {sub!r}, not a mapping or list")


def _list_index(items: list, part: str, path: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(items) <= int(part) < len(items):
        raise ConfigError(f"override {path}: '{part}' is not a valid index of a list of {len(items)} items")
    return int(part)


def _child(node: Any, part: str, path: str, here: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, path)]
    if isinstance(node, dict) and part in node:
        return node[part]
    raise ConfigError(f"override {path}: key '{here}' does not exist")


def validate(cfg: Dict[str, Any], warn=None) -> Dict[str, Any]:
    """Fill defaults, check types and choices; returns the same dict."""
    for section in list(cfg):
        if section not in SCHEMA:
            if warn:
                warn(f"deploy config section '{section}' is not used by ppise{_suggest(section, SCHEMA)}")
            continue
    for section, keys in SCHEMA.items():
        node = cfg.get(section)
        if node is None:
            node = cfg[section] = {}
        if not isinstance(node, dict):
            raise ConfigError(f"deploy config section {section} must be a mapping, got {node!r}")
        for key in node:
            if key not in keys and warn:
                warn(f"{section}.{key} is not used by ppise{_suggest(key, keys)}")
        for key, (types, default) in keys.items():
            node.setdefault(key, copy.deepcopy(default))
            value = node[key]
            ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
            if not ok:
                raise ConfigError(f"{section}.{key} must be {_type_name(types)}, got {value!r}")
    for (section, key), options in CHOICES.items():
        if cfg[section][key] not in options:
            raise ConfigError(f"{section}.{key} must be one of {', '.join(options)}, got {cfg[section][key]!r}")
    for section, key in POSITIVE:
        if cfg[section][key] < 1:
            raise ConfigError(f"{section}.{key} must be >= 1, got {cfg[section][key]!r}")
    glob = cfg["Global"]
    if glob.get("rec_inference_model_dir"):  # PaddleClas configs name the model dir this way
        glob["inference_model_dir"] = glob["rec_inference_model_dir"]
    if not glob.get("inference_model_dir"):
        raise ConfigError("Global.inference_model_dir must name the folder written by tools/export_model.py")
    return cfg


def load_deploy_config(path: str, overrides: Optional[Sequence[str]] = None, warn=None) -> Dict[str, Any]:
    """Read ``path``, apply ``-o Section.key=value`` overrides in order, validate."""
    cfg = load_yaml(path)
    for text in overrides or []:
        _set(cfg, text)
    return validate(cfg, warn=warn)


def predictor_options(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The ``Global`` keys :class:`ppise.deploy.predictor.RecPredictor` takes, by name."""
    glob = cfg["Global"]
    keys = ("batch_size", "use_gpu", "gpu_mem", "gpu_id", "enable_mkldnn", "cpu_num_threads", "use_tensorrt",
            "use_fp16", "ir_optim")
    return {k: glob[k] for k in keys}
