"""Checkpoints in PaddleClas layout, written atomically and checked on load.

``{dir}/{prefix}.pdparams`` (model), ``.pdopt`` (optimizer + lr scheduler) and
``.pdstates`` (epoch, iteration, cluster memory, RNG, best metric). Each file is written to
a temporary name, fsynced and renamed; ``.pdstates`` goes last and carries a stamp also
stored in the other two, so a set torn by a crash is detected instead of silently mixed.
"""
from __future__ import annotations

import os
import uuid
import zlib
from typing import Any, Dict, Optional, Tuple

from ..errors import ConfigError, TrainingError

SUFFIXES = (".pdparams", ".pdopt", ".pdstates")
_STAMP = "@ppise_stamp"


def _write_tmp(obj: Any, path: str) -> str:
    """Save ``obj`` next to ``path`` under a temporary name and fsync it."""
    import paddle

    tmp = f"{path}.tmp{os.getpid()}"
    try:
        paddle.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:
        _remove(tmp)
        raise TrainingError(f"cannot write checkpoint file {path}: {err}; earlier checkpoints are untouched") from err
    return tmp


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def file_crc(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(
    directory: str,
    prefix: str,
    model_state: Dict[str, Any],
    opt_state: Optional[Dict[str, Any]] = None,
    states: Optional[Dict[str, Any]] = None,
) -> str:
    """Write one checkpoint set; returns the path prefix."""
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, prefix)
    stamp = uuid.uuid4().hex
    written = []  # (tmp, final); renamed only once every file is safely on disk
    try:
        written.append((_write_tmp(dict(model_state), base + ".pdparams"), base + ".pdparams"))
        if opt_state is not None:
            opt = dict(opt_state)
            opt[_STAMP] = stamp
            written.append((_write_tmp(opt, base + ".pdopt"), base + ".pdopt"))
        st = dict(states or {})
        st.update({_STAMP: stamp, "has_opt": opt_state is not None, "params_crc": file_crc(written[0][0])})
        written.append((_write_tmp(st, base + ".pdstates"), base + ".pdstates"))
    except BaseException:
        for tmp, _ in written:
            _remove(tmp)
        raise
    for tmp, final in written:  # .pdstates last: it commits the set
        os.replace(tmp, final)
    _fsync_dir(directory)
    return base


def strip_suffix(path: str) -> str:
    for suffix in SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def load_checkpoint(path: str, key: str = "Global.checkpoints") -> Tuple[Dict[str, Any], Optional[Dict[str, Any]], Dict[str, Any]]:
    """Load (model_state, opt_state, states) from a prefix; a torn or missing set is a clear error."""
    import paddle

    base = strip_suffix(path)
    for suffix in (".pdparams", ".pdstates"):
        if not os.path.isfile(base + suffix):
            raise ConfigError(f"{key}: checkpoint file {base + suffix} not found (give the prefix, e.g. output/RecModel/latest)")
    try:
        model_state = paddle.load(base + ".pdparams")
        states = paddle.load(base + ".pdstates")
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
