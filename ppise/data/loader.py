"""Build datasets, samplers and ``paddle.io.DataLoader``s from PaddleClas ``DataLoader`` sections.

Batches are ``[images float32 [B, 3, H, W], pids int64 [B], camids int64 [B], idx int64 [B]]``.
Worker processes: paddle seeds numpy / random / paddle in each worker from a base seed drawn
from the main process's numpy RNG every time an iterator starts, so seeding the main process
makes augmentation reproducible and different per epoch; ``seed_worker`` re-applies that seed
explicitly. An exception raised in a worker is re-raised in the main process by paddle with
the same type and the worker's full traceback text in its message (so a DataError keeps the
image path).
"""
from __future__ import annotations

import random
from typing import Any, Dict, Optional

import numpy as np
import paddle

from ..errors import ConfigError
from ..registry import DATASETS, SAMPLERS
from ..utils.logger import logger
from .transforms import build_transforms

_LOADER_KEYS = ("num_workers", "use_shared_memory")


def _lookup(registry: Any, name: Any, where: str) -> Any:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} must name a registered {registry.kind}; registered: {', '.join(registry.names())}")
    try:
        return registry.get(name, where=where)
    except KeyError as err:
        raise ConfigError(err.args[0]) from None


def build_dataset(section_cfg: Dict[str, Any], where: str, transform_ops: Optional[list] = None) -> Any:
    """Build ``section_cfg['dataset']`` (e.g. ``DataLoader.Train``); ``transform_ops``, when
    given, replaces the configured ops (e.g. eval transforms to extract train features).
    The dataset receives its ops already built, as a ``Compose``."""
    ds_cfg = section_cfg.get("dataset") if isinstance(section_cfg, dict) else None
    if not isinstance(ds_cfg, dict):
        raise ConfigError(f"{where}.dataset must be a mapping with 'name', 'image_root', 'cls_label_path'")
    kwargs = dict(ds_cfg)
    cls = _lookup(DATASETS, kwargs.pop("name", None), f"{where}.dataset.name")
    ops = kwargs.pop("transform_ops", None) if transform_ops is None else transform_ops
    kwargs.pop("transform_ops", None)
    kwargs["transform_ops"] = build_transforms(ops, f"{where}.dataset.transform_ops")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"cannot build dataset {cls.__name__} from {where}.dataset: {err}") from None


def build_sampler(sampler_cfg: Dict[str, Any], labels: np.ndarray, cameras: Optional[np.ndarray], where: str,
                  rank: int = 0, world_size: int = 1, seed: int = 0) -> Any:
    """Build a batch sampler from ``{name, batch_size, ...}``; ``where`` is the config path of
    the sampler mapping (e.g. ``DataLoader.Train.sampler``)."""
    if not isinstance(sampler_cfg, dict):
        raise ConfigError(f"{where} must be a mapping with 'name' and 'batch_size'")
    kwargs = dict(sampler_cfg)
    cls = _lookup(SAMPLERS, kwargs.pop("name", None), f"{where}.name")
    try:
        return cls(labels=labels, cameras=cameras, rank=rank, world_size=world_size, seed=seed, where=where, **kwargs)
    except TypeError as err:
        raise ConfigError(f"cannot build sampler {cls.__name__} from {where}: {err}") from None


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from paddle's per-iterator base seed."""
    info = paddle.io.get_worker_info()
    seed = ((info.seed if info is not None else 0) + worker_id) % (2**32)
    np.random.seed(seed)
    random.seed(seed)


def build_dataloader(dataset: Any, batch_sampler: Any, loader_cfg: Optional[Dict[str, Any]] = None) -> paddle.io.DataLoader:
    """A ``paddle.io.DataLoader`` over ``batch_sampler`` with ``loader.num_workers`` processes."""
    cfg = dict(loader_cfg or {})
    unknown = sorted(set(cfg) - set(_LOADER_KEYS))
    if unknown:
        logger.warning(f"loader: ignoring keys ppise does not use: {', '.join(unknown)}")
    num_workers = cfg.get("num_workers", 0)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"loader.num_workers={num_workers!r} must be an integer >= 0")
    return paddle.io.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        use_shared_memory=bool(cfg.get("use_shared_memory", True)),
        worker_init_fn=seed_worker if num_workers > 0 else None,
        return_list=True,
    )
