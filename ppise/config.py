"""PaddleClas-style YAML config: load, ``-o Section.key.sub=value`` overrides, validation.

Override values are typed with ``yaml.safe_load`` (never ``eval``), so ``-o a=3`` is an int,
``-o a=[1,2]`` a list and ``-o a=null`` None. Every error names the file or key path.
"""
from __future__ import annotations

import copy
import os
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from .errors import ConfigError
from .registry import PADDLECLAS_COMPONENT_KEYS, check_arguments, check_type, close_match, split_spec
from .utils.device import DEVICE_CHOICES, parse_device
from .utils.fileio import atomic_write

SECTIONS = ("Global", "Arch", "Loss", "Optimizer", "DataLoader", "Metric", "Cluster", "Infer", "AMP")

# Every key of the plain sections, declared once: name -> (allowed types, default[, check]), a
# check being the allowed values or (test, what the value must be). Component sections (Arch,
# Loss, Optimizer, DataLoader, Metric) are checked against the keyword arguments of the
# registered classes they name (``check_components``).
Schema = Dict[str, tuple]
_NONE = type(None)
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")


def caseless(*choices: str) -> tuple:
    """A check accepting ``choices`` in any letter case (the clustering lower-cases them)."""
    return (lambda v: v.lower() in choices, "one of " + ", ".join(choices))


GLOBAL_SCHEMA: Schema = {
    "checkpoints": ((str, _NONE), None),
    "pretrained_model": ((str, _NONE), None),
    "output_dir": ((str,), "./output/"),
    "device": ((str,), "cpu", (lambda v: parse_device(v, strict=False) is not None,
                               "one of " + ", ".join(DEVICE_CHOICES))),
    "seed": ((int, _NONE), 0),
    "epochs": ((int,), 1, AT_LEAST_1),
    "save_interval": ((int,), 1, AT_LEAST_1),
    "eval_during_train": ((bool,), True),
    "eval_interval": ((int,), 1, AT_LEAST_1),
    "print_batch_step": ((int,), 10, AT_LEAST_1),
    "use_visualdl": ((bool,), False),
    "image_shape": ((list,), [3, 256, 128]),
    "save_inference_dir": ((str,), "./inference"),
    "export_format": ((str,), "pir", ("pir", "legacy")),
    "eval_mode": ((str,), "retrieval", ("retrieval",)),
    "eval_protocol": ((str,), "market", ("market", "paddleclas")),
    "feature_normalize": ((bool,), True),
    "save_features": ((str, _NONE), None),
    "cpu_threads": ((int, _NONE), None),
    "use_mkldnn": ((bool, _NONE), None),
    "overwrite": ((bool,), False),
    "infer_imgs": ((str, _NONE), None),
    "synthetic_dataset": ((dict, _NONE), None),
    "pretrained_from": ((dict, _NONE), None),  # ppise.engine.pretrain_cache: how to make pretrained_model
    "sim_block_size": ((int,), 64),
    "to_static": ((bool,), False),
}
# PaddleClas Global keys ppise has no use for: accepted with a warning so official configs load.
PADDLECLAS_GLOBAL_KEYS = ("use_dali", "class_num", "use_multilabel", "update_freq", "retrieval_feature_from",
                          "re_ranking", "use_sync_bn", "start_eval_epoch", "calc_metric_during_train")
CLUSTER_SCHEMA: Schema = {
    "k1": ((int,), 30, AT_LEAST_1),
    "k2": ((int,), 6, AT_LEAST_1),
    # Jaccard distances lie in [0, 1]: eps >= 1 would put every pair in one neighbourhood
    "eps": ((float,), 0.6, (lambda v: 0 < v < 1, "in (0, 1) (the DBSCAN radius on Jaccard "
                                                 "distances, which lie in [0, 1])")),
    "min_samples": ((int,), 4, AT_LEAST_1),
    "knn": ((str,), "exact", caseless("exact", "ivf")),
    "device": ((str,), "cpu", caseless("cpu", "gpu")),
    "gemm": ((str,), "auto", ("auto", "numpy", "scipy", "paddle", "torch")),
    "save_labels": ((bool,), False),
    "batch_size": ((int, _NONE), None, (lambda v: v is None or v >= 1, ">= 1")),
    "transform_ops": ((list, _NONE), None),
}
CLUSTER_DEFAULTS: Dict[str, Any] = {k: spec[1] for k, spec in CLUSTER_SCHEMA.items()}
# PaddleClas's AMP section: present means on (unless use_amp: False); checked only when present.
AMP_SCHEMA: Schema = {
    "use_amp": ((bool,), True),
    "scale_loss": ((float,), 1.0, (lambda v: v > 0, "> 0")),
    "use_dynamic_loss_scaling": ((bool,), False),
    "level": ((str,), "O1", ("O1", "O2")),
    "dtype": ((str,), "float16", ("float16", "bfloat16")),
    "use_promote": ((bool,), False),
    "use_fp16_test": ((bool,), False),
}
# tools/infer.py's section (PaddleClas's Infer); checked only when present, like AMP.
INFER_SCHEMA: Schema = {
    "infer_imgs": ((str, _NONE), None),  # default: Global.infer_imgs
    "batch_size": ((int,), 32, AT_LEAST_1),
    "transforms": ((list, _NONE), None),  # default: the query loader's transform_ops
    "PostProcess": ((dict, _NONE), None),  # {name: Topk, topk, gallery}
    "gallery": ((str, _NONE), None),
    "topk": ((int,), 5, AT_LEAST_1),
    "save_features": ((str, _NONE), None),
}
SECTION_SCHEMAS = {"Global": GLOBAL_SCHEMA, "Cluster": CLUSTER_SCHEMA, "AMP": AMP_SCHEMA, "Infer": INFER_SCHEMA}
_OPTIONAL_SECTIONS = ("AMP", "Infer")  # absent: not filled in (an absent AMP section means no AMP)


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


def _read_mapping(path: str) -> Dict[str, Any]:
    """One YAML file as a mapping; a missing or malformed file is a ConfigError naming it."""
    if not path or not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path!r}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = _safe_load(f)
    except _YAML_FAILURES as err:
        raise ConfigError(f"config file {path} is not valid YAML: {type(err).__name__}: {str(err)[:500]}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from err
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def merge_config(base: Dict[str, Any], child: Dict[str, Any]) -> Dict[str, Any]:
    """``child`` over ``base``: mappings merge recursively; lists, scalars and null replace."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str, _chain: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Read a YAML mapping whose keys are merged (:func:`merge_config`) over those of its
    ``_BASE_: other.yaml`` (relative to the file, may chain): a variant shows only what differs."""
    data = _read_mapping(path)
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"config file {path}: _BASE_ must be the path of one YAML file, got {base!r}")
    base_path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), base))
    chain = _chain + (os.path.abspath(path),)
    if base_path in chain:
        raise ConfigError(f"config file {path}: _BASE_ {base!r} makes a cycle: {' -> '.join(chain + (base_path,))}")
    if not os.path.isfile(base_path):
        raise ConfigError(f"config file {path}: _BASE_ {base!r} not found (looked for {base_path})")
    return merge_config(load_yaml(base_path, chain), data)


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


def apply_override(cfg: Dict[str, Any], text: str, sections: Sequence[str] = SECTIONS,
                   schemas: Optional[Dict[str, Schema]] = None) -> None:
    """Set one override in place; only leaf keys may be new, and the direct keys of a section
    with a schema (``schemas``, default SECTION_SCHEMAS) must be known. The deploy config passes its own."""
    schemas = SECTION_SCHEMAS if schemas is None else schemas
    parts, value = parse_override(text)
    path = ".".join(parts)
    if parts[0] not in sections:
        raise ConfigError(f"override {path}: unknown section '{parts[0]}'{close_match(parts[0], sections)}; sections: {', '.join(sections)}")
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
                    raise ConfigError(f"override {path}: key '{here}' does not exist{close_match(part, node.keys())}")
            node = node[part]
        else:
            raise ConfigError(f"override {path}: '{here}' holds a {type(node).__name__}, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, path)] = value
    elif isinstance(node, dict):
        schema = schemas.get(parts[0])
        if schema is not None and len(parts) == 2:
            if last not in schema and last not in node:
                raise ConfigError(f"override {path}: unknown {parts[0]} key '{last}'{close_match(last, schema)}; "
                                  f"{parts[0]} keys: {', '.join(schema)}")
            types = schema.get(last, ((),))[0]
            if str in types and not isinstance(value, types):
                value = text.split("=", 1)[1].strip()  # a path such as 'a: b' or '1501' is meant literally
        node[last] = value
    else:
        raise ConfigError(f"override {path}: parent holds a {type(node).__name__}, not a section")


def check_section(node: Dict[str, Any], schema: Schema, section: str, warn=None,
                  tolerated: Sequence[str] = (), strict: bool = True) -> None:
    """Keys of ``schema`` (name -> (types, default[, check])): check types, fill defaults, check
    values. Unknown keys are errors naming the path, except ``tolerated`` ones (and all of them
    when not ``strict``), which only warn: PaddleClas files carry keys ppise does not use."""
    for key, value in list(node.items()):
        if key not in schema:
            if key not in tolerated and strict:
                raise ConfigError(f"unknown {section} key '{key}'{close_match(key, schema)} (at {section}.{key}); "
                                  f"{section} keys: {', '.join(schema)}")
            if warn:
                warn(f"{section}.{key} is a PaddleClas key ppise does not use; ignored" if key in tolerated
                     else f"{section}.{key} is not used by ppise{close_match(key, schema)}")
            continue
        check_type(value, schema[key][0], f"{section}.{key}")
    for key, spec in schema.items():
        node.setdefault(key, copy.deepcopy(spec[1]))
        if len(spec) > 2:
            _check_value(f"{section}.{key}", node[key], spec[2])


def check_plain_section(node: Dict[str, Any], section: str, warn=None) -> Dict[str, Any]:
    """One section of SECTION_SCHEMAS, checked and filled in place (:func:`check_section`)."""
    tolerated = PADDLECLAS_GLOBAL_KEYS if section == "Global" else ()
    check_section(node, SECTION_SCHEMAS[section], section, warn, tolerated=tolerated)
    return node


def check_key(section: str, key: str, value: Any) -> None:
    """One value against its SECTION_SCHEMAS entry, for code called without a config (numpy
    scalars count as the Python number they hold)."""
    spec = SECTION_SCHEMAS[section][key]
    value = value.item() if isinstance(value, np.generic) else value
    check_type(value, spec[0], f"{section}.{key}")
    if len(spec) > 2:
        _check_value(f"{section}.{key}", value, spec[2])


def _check_value(path: str, value: Any, check: tuple) -> None:
    """``check``: the allowed values, or (test, what the value must be)."""
    if callable(check[0]):
        if value != value or not check[0](value):  # nan fails every range
            raise ConfigError(f"{path} must be {check[1]}, got {value!r}")
    elif value not in check:
        raise ConfigError(f"{path} must be one of {', '.join(check)}, got {value!r}")


def validate(cfg: Dict[str, Any], warn=None) -> Dict[str, Any]:
    """Check every section's keys, types and values, fill defaults; returns the same dict.

    Old ISE configs are converted (:func:`migrate_ise_config`); components named in Arch, Loss,
    Optimizer, DataLoader and Metric are checked by :func:`check_components`.
    """
    for section in cfg:
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section '{section}'{close_match(section, SECTIONS)}; sections: {', '.join(SECTIONS)}")
        if cfg[section] is not None and not isinstance(cfg[section], (dict, list)):
            raise ConfigError(f"section {section} must be a mapping, got {cfg[section]!r}")
    for section, schema in SECTION_SCHEMAS.items():
        if section in _OPTIONAL_SECTIONS and cfg.get(section) is None:
            continue
        node = cfg[section] = {} if cfg.get(section) is None else cfg[section]
        if not isinstance(node, dict):
            raise ConfigError(f"section {section} must be a mapping of keys, got {node!r}")
        check_plain_section(node, section, warn)
    shape = cfg["Global"]["image_shape"]
    if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise ConfigError(f"Global.image_shape must be [C, H, W] positive ints, got {shape!r}")
    migrate_ise_config(cfg, warn)
    return cfg


def migrate_ise_config(cfg: Dict[str, Any], warn=None) -> None:
    """Convert the pre-objective ISE form in place (one warning): ``Arch.Head: ISEHead`` becomes
    ``Loss.Train: - ISESupport`` after ClusterMemoryLoss; ``ClusterMemoryLoss.use_support`` goes
    (refused when False with supports: they now always join the memory loss, as officially)."""
    notes = []
    arch = cfg.get("Arch") if isinstance(cfg.get("Arch"), dict) else {}
    head = arch.get("Head")
    losses = get(cfg, "Loss.Train", None)
    losses = losses if isinstance(losses, list) else None
    names = [next(iter(e)) for e in losses or [] if isinstance(e, dict) and len(e) == 1]
    if isinstance(head, dict) and (head.get("name") == "ISEHead" or (len(head) == 1 and "ISEHead" in head)):
        if "ISESupport" in names:
            raise ConfigError("Arch.Head: ISEHead and Loss.Train: - ISESupport both given; keep only Loss.Train's ISESupport")
        _, kwargs = split_spec(head, "Arch.Head")
        if losses is None:
            losses = cfg.setdefault("Loss", {}).setdefault("Train", [])
        at = names.index("ClusterMemoryLoss") + 1 if "ClusterMemoryLoss" in names else len(losses)
        losses.insert(at, {"ISESupport": kwargs})
        names.insert(at, "ISESupport")
        del arch["Head"]
        notes.append(f"Arch.Head: ISEHead moved to Loss.Train[{at}]: - ISESupport: {kwargs}")
    for i, entry in enumerate(losses or []):
        args = entry.get("ClusterMemoryLoss") if isinstance(entry, dict) else None
        if isinstance(args, dict) and "use_support" in args:
            if args["use_support"] is False and "ISESupport" in names:
                raise ConfigError(
                    f"Loss.Train[{i}].ClusterMemoryLoss.use_support=False is no longer supported: ISE supports always "
                    f"join the memory loss and its update, as in the official code; remove the key (or remove "
                    f"ISESupport to train plain cluster contrast)")
            if args["use_support"] not in (True, False):
                raise ConfigError(f"Loss.Train[{i}].ClusterMemoryLoss.use_support must be true or false, got {args['use_support']!r}")
            del args["use_support"]
            notes.append(f"Loss.Train[{i}].ClusterMemoryLoss.use_support is gone (ISE supports, when listed, always "
                         f"join the memory loss); remove the key")
    if notes:
        message = "old ISE config form converted: " + "; ".join(notes) + " (see Loss.Train: - ISESupport: {topk, base_lambda})"
        if warn:
            warn(message)
        else:
            warnings.warn(message, stacklevel=3)


_DATALOADER_PARTS = ("dataset", "sampler", "loader")


def check_components(cfg: Dict[str, Any], warn=None, training: bool = False) -> None:
    """Check every component a config names, before any data is read: registered name, each
    keyword against the constructor's signature (close match on a typo), annotated types;
    with ``training``, also that ``Loss.Train`` forms one training objective."""
    from . import arch, data, loss, metric, optimizer  # noqa: F401  (register the components)
    from .arch.rec_model import ARCH_KEYS
    from .data.loader import _LOADER_KEYS
    from .registry import BACKBONES, DATASETS, HEADS, LOSSES, LR_SCHEDULERS, METRICS, NECKS, OPTIMIZERS, SAMPLERS, TRANSFORMS

    def check(registry, spec, where, supplied=(), handled=()):
        _, factory, kwargs, at = registry.resolve(spec, where)
        kwargs = {k: v for k, v in kwargs.items() if k not in handled}
        check_arguments(factory, kwargs, at, supplied=supplied, tolerated=PADDLECLAS_COMPONENT_KEYS, warn=warn)

    arch_cfg = cfg.get("Arch")
    if isinstance(arch_cfg, dict):
        for key in arch_cfg:
            if key not in ARCH_KEYS:
                raise ConfigError(f"unknown Arch key '{key}'{close_match(key, ARCH_KEYS)} (at Arch.{key}); Arch keys: {', '.join(ARCH_KEYS)}")
        backbone = arch_cfg.get("Backbone")
        if isinstance(backbone, dict) and backbone.get("name") in BACKBONES:  # PaddleClas zoo names take **kwargs
            check(BACKBONES, backbone, "Arch.Backbone", handled=("pretrained", "use_ssld"))
        for key, registry in (("Neck", NECKS), ("Head", HEADS)):
            if isinstance(arch_cfg.get(key), dict):
                check(registry, arch_cfg[key], f"Arch.{key}")
    for split in ("Train", "Eval"):
        entries = get(cfg, f"Loss.{split}", None)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            check(LOSSES, entry, f"Loss.{split}[{i}]")
    opt = cfg.get("Optimizer")
    if isinstance(opt, dict) and "name" in opt:
        check(OPTIMIZERS, opt, "Optimizer", supplied=("parameters", "learning_rate", "weight_decay"),
              handled=("lr", "regularizer", "weight_decay"))
        lr = opt.get("lr")
        if isinstance(lr, dict):
            check(LR_SCHEDULERS, dict(lr, name=lr.get("name", "Constant")), "Optimizer.lr",
                  supplied=("iters_per_epoch", "epochs"), handled=("warmup_start_lr", "warmup_epoch"))  # warmup wraps any schedule
    evals = get(cfg, "DataLoader.Eval", None)
    sections = [("DataLoader.Train", get(cfg, "DataLoader.Train", None))]
    sections += [(f"DataLoader.Eval.{k}", v) for k, v in (evals if isinstance(evals, dict) else {}).items()]
    for where, section in sections:
        if not isinstance(section, dict):
            continue
        for key in section:
            if key not in _DATALOADER_PARTS:
                raise ConfigError(f"unknown key '{key}'{close_match(key, _DATALOADER_PARTS)} (at {where}.{key}); "
                                  f"{where} holds {', '.join(_DATALOADER_PARTS)}")
        ds = section.get("dataset")
        if isinstance(ds, dict) and "name" in ds:
            check(DATASETS, ds, f"{where}.dataset", handled=("transform_ops",))
            for i, op in enumerate(ds.get("transform_ops") or []):
                check(TRANSFORMS, op, f"{where}.dataset.transform_ops[{i}]")
        sampler = section.get("sampler")
        if isinstance(sampler, dict) and "name" in sampler:
            check(SAMPLERS, sampler, f"{where}.sampler", supplied=("labels", "cameras", "rank", "world_size", "seed", "where"))
        for key in section.get("loader") or {}:
            if key not in _LOADER_KEYS:
                raise ConfigError(f"unknown key '{key}'{close_match(key, _LOADER_KEYS)} (at {where}.loader.{key}); "
                                  f"loader keys: {', '.join(_LOADER_KEYS)}")
    metrics = get(cfg, "Metric.Eval", None)
    for i, entry in enumerate(metrics if isinstance(metrics, list) else []):
        check(METRICS, entry, f"Metric.Eval[{i}]")
    for i, op in enumerate(get(cfg, "Cluster.transform_ops", None) or []):
        check(TRANSFORMS, op, f"Cluster.transform_ops[{i}]")
    if training:
        loss.build_objective(get(cfg, "Loss.Train"), where="Loss.Train")


def get(cfg: Dict[str, Any], path: str, default: Any = ConfigError) -> Any:
    """Read ``A.b.0.c``; without a default a missing key raises ConfigError naming the path."""
    node: Any = cfg
    for part in path.split("."):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, TypeError, ValueError):
            if default is ConfigError:
                raise ConfigError(f"missing required config key {path}") from None
            return default
    return node


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
    with atomic_write(dst, encoding="utf-8") as f:
        f.write(dump(cfg))
    return dst
