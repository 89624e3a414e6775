"""Pre-trained start made on first use: run a supervised pre-training once, cache its weights.

    Global:
      pretrained_model: ./output/pretrain_demo/backbone.pdparams
      pretrained_from:                     # only used while pretrained_model is this cache and missing
        config: configs/pretrain_demo.yaml # relative: to the working dir, else to the repository
        cache: ./output/pretrain_demo/backbone.pdparams
        overrides: []                      # optional -o for the pre-training run

A ``pretrained_model`` that is null or another file than ``cache`` is left alone (a missing
file stays the usual "not found" error, never a surprise training run). The pre-training runs
as a child ``tools/train.py`` so its logger, seed and process group stay out of this run;
concurrent makers serialise on a file lock, and other ranks wait for rank 0 at a barrier.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import ConfigError, TrainingError
from ..utils import dist
from ..utils.fileio import atomic_save, atomic_write
from ..utils.logger import logger

__all__ = ["ensure_pretrained", "PretrainSpec", "KEEP_PREFIXES"]

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KEEP_PREFIXES = ("backbone.", "neck.")  # what a target run takes; the source classifier stays behind
# a child run must not join this run's process group
_DIST_ENV = ("PADDLE_TRAINERS_NUM", "PADDLE_TRAINER_ID", "PADDLE_TRAINER_ENDPOINTS", "PADDLE_CURRENT_ENDPOINT",
             "PADDLE_RANK_IN_NODE", "PADDLE_LOCAL_RANK", "PADDLE_GLOBAL_RANK", "PADDLE_WORLD_SIZE", "PADDLE_MASTER",
             "PADDLE_NNODES", "PADDLE_GLOBAL_SIZE", "PADDLE_LOCAL_SIZE", "PADDLE_JOB_ID", "PADDLE_DISTRI_BACKEND")

Runner = Callable[[str, List[str]], None]


class PretrainSpec:
    """``Global.pretrained_from`` checked: the pre-training config, the cache path, extra overrides."""

    def __init__(self, spec: Any, where: str = "Global.pretrained_from") -> None:
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a mapping {{config: ..., cache: ...}}, got {spec!r}")
        unknown = sorted(set(spec) - {"config", "cache", "overrides"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: cache, config, overrides")
        for key in ("config", "cache"):
            if not isinstance(spec.get(key), str) or not spec[key]:
                raise ConfigError(f"{where}.{key} must be a path, got {spec.get(key)!r}")
        overrides = spec.get("overrides") or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"{where}.overrides must be a list of 'Section.key=value' strings, got {overrides!r}")
        self.config = _find_config(spec["config"], f"{where}.config")
        self.cache = spec["cache"]
        self.overrides: List[str] = list(overrides)


def _find_config(path: str, where: str) -> str:
    candidates = [path] if os.path.isabs(path) else [os.path.abspath(path), os.path.join(REPO_ROOT, path)]
    for cand in candidates:
        if os.path.isfile(cand):
            return cand
    raise ConfigError(f"{where}: pre-training config {path!r} not found (looked in {', '.join(candidates)})")


def _same_file(a: str, b: str) -> bool:
    norm = lambda p: os.path.normcase(os.path.abspath(p[:-9] if p.endswith(".pdparams") else p))  # noqa: E731
    return norm(a) == norm(b)


def _with_suffix(path: str) -> str:
    return path if path.endswith(".pdparams") else path + ".pdparams"


def subprocess_runner(config: str, overrides: List[str]) -> None:
    """``python tools/train.py -c config -o ...`` in a clean single-process environment."""
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "train.py"), "-c", config]
    cmd += [arg for o in overrides for arg in ("-o", o)]
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise TrainingError(f"the pre-training run failed (exit {proc.returncode}): {' '.join(cmd)}; "
                            f"its log is above; fix it, or start without it: -o Global.pretrained_model=null")


def _config_digest(config: str, overrides: Sequence[str]) -> str:
    from ..config import dump, get_config

    return hashlib.sha1(dump(get_config(config, list(overrides))).encode("utf-8")).hexdigest()[:16]


def _run_overrides(glob: Dict[str, Any], spec: PretrainSpec, run_dir: str) -> List[str]:
    out = [f"Global.output_dir={run_dir}", "Global.overwrite=True", "Global.checkpoints=null",
           "Global.pretrained_model=null", f"Global.device={glob.get('device', 'cpu')}"]
    if glob.get("cpu_threads"):
        out.append(f"Global.cpu_threads={glob['cpu_threads']}")
    return out + spec.overrides  # the spec's own overrides win


def _write_cache(weights: str, cache: str, info: Dict[str, Any]) -> int:
    """Keep the backbone and neck of ``weights`` in ``cache``; ``cache.json`` says how."""
    import paddle

    kept = {k: v for k, v in paddle.load(weights).items() if k.startswith(KEEP_PREFIXES)}
    if not kept:
        raise TrainingError(f"{weights} holds no {' / '.join(KEEP_PREFIXES)} weights to cache")
    atomic_save(kept, cache)
    with atomic_write(cache + ".json", "w", encoding="utf-8") as f:
        json.dump(dict(info, tensors=len(kept), source_weights=weights), f, indent=2)
    return len(kept)


def _make(glob: Dict[str, Any], spec: PretrainSpec, cache: str, runner: Runner) -> None:
    import fcntl

    from ..config import get_config
    from .hooks import model_dir_of, read_train_log

    os.makedirs(os.path.dirname(os.path.abspath(cache)) or ".", exist_ok=True)
    with open(cache + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be making it right now
        if os.path.isfile(cache):
            logger.info(f"pre-trained weights {cache} were made by another run meanwhile: reusing them")
            return
        run_dir = os.path.join(os.path.dirname(os.path.abspath(cache)), "run")
        overrides = _run_overrides(glob, spec, run_dir)
        logger.info(f"Global.pretrained_model {cache} does not exist yet: making it once by supervised pre-training "
                    f"({spec.config}, run in {run_dir}) so this run starts from a trained backbone instead of random "
                    f"weights; later runs reuse the file. Start from random weights instead: -o Global.pretrained_model=null")
        start = time.time()
        runner(spec.config, overrides)
        seconds = round(time.time() - start, 1)
        weights = os.path.join(model_dir_of(get_config(spec.config, overrides)), "latest.pdparams")
        if not os.path.isfile(weights):
            raise TrainingError(f"the pre-training run finished without writing {weights}")
        info = {"made_by": "ppise.engine.pretrain_cache", "config": spec.config, "overrides": overrides,
                "config_digest": _config_digest(spec.config, overrides), "seconds": seconds,
                "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        last = (read_train_log(run_dir) or [None])[-1]
        if last is not None:
            info["final"] = {k: last[k] for k in ("epoch", "mAP", "rank1", "loss") if k in last}
        n = _write_cache(weights, cache, info)
        logger.info(f"pre-trained weights ready: {cache} ({n} backbone/neck tensors, pre-training took {seconds:.0f}s"
                    + (f", source mAP {100 * info['final']['mAP']:.1f}" if "mAP" in info.get("final", {}) else "") + ")")


def _warn_if_stale(spec: PretrainSpec, cache: str, glob: Dict[str, Any]) -> None:
    try:
        with open(cache + ".json", encoding="utf-8") as f:
            made = json.load(f)
    except (OSError, ValueError):
        return
    run_dir = os.path.join(os.path.dirname(os.path.abspath(cache)), "run")
    try:
        now = _config_digest(spec.config, _run_overrides(glob, spec, run_dir))
    except ConfigError:
        return
    if made.get("config_digest") and made["config_digest"] != now:
        logger.warning(f"{cache} was made from another version of {spec.config} than the one here; "
                       f"delete {cache} to make it again")


def ensure_pretrained(cfg: Dict[str, Any], runner: Optional[Runner] = None) -> Optional[str]:
    """Make ``Global.pretrained_model`` from ``Global.pretrained_from`` when it is that cache and
    missing; return the weights path the run will load (None for a random start)."""
    glob = cfg["Global"]
    target = glob.get("pretrained_model")
    raw = glob.get("pretrained_from")
    if not target or not raw:
        return target or None
    spec = PretrainSpec(raw)
    if not _same_file(target, spec.cache):
        return target  # the user points elsewhere: load that (or fail on it) as usual
    cache = _with_suffix(spec.cache)
    if os.path.isfile(cache):
        if dist.is_main():
            _warn_if_stale(spec, cache, glob)
        return cache
    if dist.is_main():
        _make(glob, spec, cache, runner or subprocess_runner)
    dist.barrier()
    if not os.path.isfile(cache):
        raise TrainingError(f"pre-trained weights {cache} were not made (see the log of rank 0)")
    return cache
