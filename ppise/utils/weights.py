"""Load ``.pdparams`` weights with one clear report; save state dicts atomically.

PaddleClas convention: a weights path may be given with or without the ``.pdparams``
suffix. Strict loading names every kind of mismatch (missing, unexpected, shape) in a
single ConfigError so a user sees at once why a checkpoint does not fit a config.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn as nn

from ppise.errors import ConfigError, TrainingError
from ppise.utils.logger import logger

_SHOW = 5  # how many keys of each kind a message lists


def resolve_weights_path(path: str, config_key: str = "Global.pretrained_model") -> str:
    """``path`` or ``path + '.pdparams'``, whichever is a file; else a ConfigError naming both."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{config_key} must be a path to a .pdparams file, got {path!r}")
    candidates = [path] if path.endswith(".pdparams") else [path + ".pdparams", path]
    for cand in candidates:
        if os.path.isfile(cand):
            return cand
    raise ConfigError(f"weights file not found: {candidates[0]!r} (from {config_key}: {path!r}); "
                      f"give a .pdparams path, with or without the suffix")


def _shape(value: Any) -> Tuple[int, ...]:
    return tuple(int(d) for d in (value.shape if hasattr(value, "shape") else np.shape(value)))


def _listing(title: str, items: List[str]) -> str:
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {title}: {', '.join(items[:_SHOW])}{more}"


def load_pretrained(model: nn.Layer, path: str, strict: bool = True, skip_prefixes: Sequence[str] = (),
                    key_prefix: str = "", config_key: str = "Global.pretrained_model") -> Dict[str, Any]:
    """Load ``path`` into ``model``; return ``{path, loaded, missing, unexpected, mismatched}``.

    ``skip_prefixes``: keys (of the file and of the model) starting with these are ignored,
    e.g. ``("head.",)`` to keep a fresh classifier. ``key_prefix``: use only the file's keys
    starting with it, stripped (``"backbone."`` loads a full RecModel file into a backbone).
    Strict: any missing / unexpected / shape-mismatched key is a ConfigError listing them.
    Non-strict: matching keys load, the rest is logged; a file matching nothing is an error.
    """
    file_path = resolve_weights_path(path, config_key)
    try:
        state = paddle.load(file_path)
    except Exception as err:  # corrupt or not a paddle file
        raise ConfigError(f"cannot read weights file {file_path!r} (from {config_key}): {err}") from err
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {file_path!r} (from {config_key}) holds a {type(state).__name__}, "
                          "not a state dict")
    skip = tuple(skip_prefixes)
    if key_prefix:
        state = {k[len(key_prefix):]: v for k, v in state.items() if k.startswith(key_prefix)}
    state = {k: v for k, v in state.items() if not (skip and k.startswith(skip))}
    own = {k: v for k, v in model.state_dict().items() if not (skip and k.startswith(skip))}

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, _shape(state[k]), _shape(own[k])) for k in own if k in state and _shape(state[k]) != _shape(own[k])]
    report: Dict[str, Any] = {"path": file_path, "missing": missing, "unexpected": unexpected,
                              "mismatched": mismatched}
    problems = []
    if missing:
        problems.append(_listing("missing key(s) (in the model, not in the file)", missing))
    if unexpected:
        problems.append(_listing("unexpected key(s) (in the file, not in the model)", unexpected))
    if mismatched:
        problems.append(_listing("shape mismatch(es) (file vs model)",
                                 [f"{k} {list(a)} vs {list(b)}" for k, a, b in mismatched]))
    if strict and problems:
        raise ConfigError(f"weights {file_path!r} (from {config_key}) do not fit the model: " + "; ".join(problems)
                          + ". Check that the config's Arch matches the one the weights were trained with")
    bad = {k for k, _, _ in mismatched}
    to_load = {k: v for k, v in state.items() if k in own and k not in bad}
    if not to_load:
        raise ConfigError(f"weights {file_path!r} (from {config_key}) share no key of matching shape with the model; "
                          + "; ".join(problems))
    with warnings.catch_warnings():  # Paddle warns per skipped key; the report above says it once
        warnings.simplefilter("ignore", UserWarning)
        model.set_state_dict(to_load)
    report["loaded"] = len(to_load)
    if problems:
        logger.warning("loaded %d tensors from %s (%s); %s", len(to_load), file_path, config_key, "; ".join(problems))
    else:
        logger.info("loaded %d tensors from %s (%s)", len(to_load), file_path, config_key)
    return report


def save_state_dict_atomic(state: Dict[str, Any], path: str) -> None:
    """``paddle.save`` to ``path.tmp``, fsync, then rename: a crash never leaves a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    try:
        os.makedirs(directory, exist_ok=True)
        paddle.save(state, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable where the OS allows
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise TrainingError(f"cannot write {path!r}: {err}") from err
