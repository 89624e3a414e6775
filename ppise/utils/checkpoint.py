"""Checkpoints in PaddleClas layout, written atomically and checked on load.

``{dir}/{prefix}.pdparams`` (model), ``.pdopt`` (optimizer + lr scheduler), ``.pdstates``
(epoch, iteration, cluster memory, RNG, best metric). ``.pdstates`` is renamed into place
last and carries a stamp (and the model file's CRC) that tells a set torn by a crash; a resume
from a torn set falls back to the newest complete one, so a crash costs at most one epoch.
"""
from __future__ import annotations

import contextlib
import glob
import os
import uuid
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import paddle

from ..errors import ConfigError, TrainingError
from .fileio import atomic_path

SUFFIXES = (".pdparams", ".pdopt", ".pdstates")
_STAMP = "@ppise_stamp"


def _save(obj: Any, tmp: str, path: str) -> None:
    """``paddle.save`` to ``tmp`` (``atomic_path`` fsyncs and renames it); a failed write names ``path``."""
    try:
        paddle.save(obj, tmp)
    except (OSError, RuntimeError) as err:
        raise TrainingError(f"cannot write checkpoint file {path}: {err}; earlier checkpoints are untouched") from err


def _loadable(obj: Any) -> Any:
    """Make ``paddle.load`` able to read the object back: it rebuilds every numpy array as a
    tensor and has no uint32 (numpy's RNG key), so such arrays are stored as int64."""
    if isinstance(obj, np.ndarray) and obj.dtype == np.uint32:
        return obj.astype(np.int64)
    if isinstance(obj, dict):
        return {k: _loadable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_loadable(v) for v in obj)
    return obj


def file_crc(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def remove_stale_tmp(directory: str, prefix: str = "*") -> List[str]:
    """Delete temporary files left by a process killed while saving (never our own live ones)."""
    mine = f".tmp{os.getpid()}"
    removed = []
    for suffix in SUFFIXES:
        for path in glob.glob(os.path.join(glob.escape(directory), f"{prefix}{suffix}.tmp*")):
            if not path.endswith(mine):
                with contextlib.suppress(OSError):
                    os.remove(path)
                removed.append(path)
    return removed


def save_checkpoint(
    directory: str,
    prefix: str,
    model_state: Dict[str, Any],
    opt_state: Optional[Dict[str, Any]] = None,
    states: Optional[Dict[str, Any]] = None,
) -> str:
    """Write one checkpoint set; returns the path prefix."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise TrainingError(f"cannot create checkpoint dir {directory}: {err}; earlier checkpoints are untouched") from err
    remove_stale_tmp(directory, glob.escape(prefix))
    base = os.path.join(directory, prefix)
    stamp = uuid.uuid4().hex
    suffixes = SUFFIXES if opt_state is not None else (".pdparams", ".pdstates")
    try:
        with contextlib.ExitStack() as stack:  # renames in reverse: .pdstates (the commit) last
            tmp = {s: stack.enter_context(atomic_path(base + s, f"{base}{s}.tmp{os.getpid()}"))
                   for s in reversed(suffixes)}
            _save(dict(model_state), tmp[".pdparams"], base + ".pdparams")
            if opt_state is not None:
                _save({**opt_state, _STAMP: stamp}, tmp[".pdopt"], base + ".pdopt")
            st = _loadable(dict(states or {}))
            st.update({_STAMP: stamp, "has_opt": opt_state is not None,
                       "params_crc": file_crc(tmp[".pdparams"])})
            _save(st, tmp[".pdstates"], base + ".pdstates")
    except OSError as err:  # not a write (_save raised TrainingError for those): a rename
        raise TrainingError(f"cannot commit checkpoint {base}: {err}; it may be incomplete, the other checkpoints "
                            f"in {directory} are untouched") from err
    return base


def strip_suffix(path: str) -> str:
    base, ext = os.path.splitext(path)
    return base if ext in SUFFIXES else path


def load_checkpoint(path: str, key: str = "Global.checkpoints") -> Tuple[Dict[str, Any], Optional[Dict[str, Any]], Dict[str, Any]]:
    """Load (model_state, opt_state, states) from a prefix; a torn or missing set is a clear error."""
    base = strip_suffix(path)
    if not os.path.isfile(base + ".pdparams"):
        raise ConfigError(f"{key}: checkpoint file {base}.pdparams not found (give the prefix, e.g. output/RecModel/latest)")
    if not os.path.isfile(base + ".pdstates"):
        raise ConfigError(f"{key}: checkpoint {base} is incomplete ({base}.pdstates not found: a save was interrupted, "
                          f"or these are weights only, for Global.pretrained_model); resume from an epoch_N checkpoint instead")
    try:
        model_state = paddle.load(base + ".pdparams")
        states = paddle.load(base + ".pdstates", return_numpy=True)  # plain numbers and arrays
        opt_state = None
        if states.get("has_opt") and os.path.isfile(base + ".pdopt"):
            opt_state = paddle.load(base + ".pdopt")
    except Exception as err:  # noqa: BLE001 - paddle raises many kinds on corrupt files
        raise ConfigError(f"{key}: checkpoint {base} cannot be read ({type(err).__name__}: {err})") from err
    stamp = states.pop(_STAMP, None)
    torn = "params_crc" in states and states.pop("params_crc") != file_crc(base + ".pdparams")
    if opt_state is not None and opt_state.pop(_STAMP, None) != stamp:
        torn = True
    if torn:
        raise ConfigError(f"{key}: checkpoint {base} is incomplete (files from different saves); resume from an epoch_N checkpoint instead")
    return model_state, opt_state, states


def _epoch_of(base: str) -> Tuple[int, int]:
    """(epoch, global_iter) recorded in a set's .pdstates; (-1, -1) when it cannot be read."""
    try:
        states = paddle.load(base + ".pdstates", return_numpy=True)
        return int(states.get("epoch", -1)), int(states.get("global_iter", -1))
    except Exception:  # noqa: BLE001 - a damaged file just ranks last
        return -1, -1


def complete_checkpoints(directory: str) -> List[Tuple[int, int, str]]:
    """(epoch, global_iter, prefix) of every set in ``directory`` with a .pdstates, newest first."""
    bases = sorted(strip_suffix(p) for p in glob.glob(os.path.join(glob.escape(directory), "*.pdstates")))
    ranked = [(*_epoch_of(b), b) for b in bases]
    def order(rec: Tuple[int, int, str]) -> Tuple[int, int, int]:  # ties: latest, then epoch_N, then others
        name = os.path.basename(rec[2])
        return rec[0], rec[1], 2 if name == "latest" else int(name.startswith("epoch_"))

    return sorted((r for r in ranked if r[0] >= 0), key=order, reverse=True)


def load_resume_checkpoint(path: str, key: str = "Global.checkpoints", warn: Optional[Callable[[str], None]] = None
                           ) -> Tuple[str, Tuple[Dict[str, Any], Optional[Dict[str, Any]], Dict[str, Any]]]:
    """Load ``path`` to resume; if that set is torn or unreadable (a crash while saving), fall back
    to the newest complete set in the same folder and warn. Returns (prefix used, loaded state).
    A path with no checkpoint file at all is a user error (typo) and raises, no guessing."""
    base = strip_suffix(path)
    directory = os.path.dirname(base) or "."
    remove_stale_tmp(directory)  # left by a process killed while saving; nobody saves before training starts
    try:
        return base, load_checkpoint(base, key)
    except ConfigError as err:
        if not any(os.path.isfile(base + s) for s in SUFFIXES):
            raise
        failure = err
    for epoch, _, other in complete_checkpoints(directory):
        if other == base:
            continue
        try:
            loaded = load_checkpoint(other, key)
        except ConfigError:
            continue
        if warn is not None:
            why = str(failure).replace("; resume from an epoch_N checkpoint instead", "")
            warn(f"{why}; resuming instead from {other} (epoch {epoch}), the newest complete checkpoint in {directory}")
        return other, loaded
    raise ConfigError(f"{failure}; no other complete checkpoint in {directory} to fall back to")
