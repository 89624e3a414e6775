"""Build datasets, samplers and ``paddle.io.DataLoader``s from PaddleClas ``DataLoader`` sections.

Batches are ``[images float32 [B, 3, H, W], pids int64 [B], camids int64 [B], idx int64 [B]]``.
Workers are seeded from the main process's numpy RNG, die with the trainer, free their shared
memory, and their errors reach the caller with their own type and message.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import random
import re
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import paddle
import psutil
from paddle.io.dataloader.collate import default_collate_fn

from ..errors import ConfigError, PpiseError
from ..registry import DATASETS, SAMPLERS
from ..utils.logger import logger
from .transforms import build_transforms

_LOADER_KEYS = ("num_workers", "use_shared_memory")


def _build(registry: Any, cfg: Dict[str, Any], at: str, **supplied: Any) -> Any:
    """``registry[cfg['name']](**rest of cfg, **supplied)``; errors name the config path ``at``."""
    kwargs = dict(cfg)
    name = kwargs.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{at}.name must name a registered {registry.kind}; "
                          f"registered: {', '.join(registry.names())}")
    cls = registry.get(name, where=f"{at}.name")
    try:
        return cls(**kwargs, **supplied)
    except TypeError as err:
        raise ConfigError(f"cannot build {registry.kind} {cls.__name__} from {at}: {err}") from None


def build_dataset(section_cfg: Dict[str, Any], where: str, transform_ops: Optional[list] = None) -> Any:
    """Build ``section_cfg['dataset']`` (e.g. ``DataLoader.Train``); ``transform_ops``, when
    given, replaces the configured ops (e.g. eval transforms to extract train features)."""
    ds_cfg = section_cfg.get("dataset") if isinstance(section_cfg, dict) else None
    if not isinstance(ds_cfg, dict):
        raise ConfigError(f"{where}.dataset must be a mapping with 'name', 'image_root', 'cls_label_path'")
    ops = ds_cfg.get("transform_ops") if transform_ops is None else transform_ops
    ops = build_transforms(ops, f"{where}.dataset.transform_ops")
    return _build(DATASETS, {**ds_cfg, "transform_ops": ops}, f"{where}.dataset")


def build_sampler(sampler_cfg: Dict[str, Any], labels: np.ndarray, cameras: Optional[np.ndarray], where: str,
                  rank: int = 0, world_size: int = 1, seed: int = 0) -> Any:
    """A batch sampler from ``{name, batch_size, ...}`` at config path ``where``."""
    if not isinstance(sampler_cfg, dict):
        raise ConfigError(f"{where} must be a mapping with 'name' and 'batch_size'")
    return _build(SAMPLERS, sampler_cfg, where, labels=labels, cameras=cameras, rank=rank,
                  world_size=world_size, seed=seed, where=where)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from paddle's per-iterator base seed."""
    info = paddle.io.get_worker_info()
    seed = ((info.seed if info is not None else 0) + worker_id) % (2**32)
    np.random.seed(seed)
    random.seed(seed)


# ------------------------------------------------------------------ workers die with their parent
# Paddle's ParentWatchDog only looks between batches, and an orphan hangs at exit joining its
# result queue's feeder thread: after a kill -9 of the trainer, workers lived on for minutes.
SHM_DIR = "/dev/shm"
_SHM_FILE = re.compile(r"^paddle_(\d+)_")  # paddle's mmap allocator: paddle_<creating pid>_<n>_<random>
_PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.2


def _remove_shm_files(doomed: Callable[[int], bool]) -> int:
    """Unlink this user's ``/dev/shm/paddle_<pid>_*`` files for which ``doomed(pid)`` is true."""
    removed, uid = 0, os.getuid()
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for name in names:
        match = _SHM_FILE.match(name)
        path = os.path.join(SHM_DIR, name)
        with contextlib.suppress(OSError):
            if match and doomed(int(match.group(1))) and os.stat(path).st_uid == uid:
                os.unlink(path)
                removed += 1
    return removed


def remove_stale_shm_files() -> int:
    """Unlink this user's ``/dev/shm/paddle_<pid>_*`` files whose creating process is gone
    (left by workers killed before they could clean up, e.g. by the OOM killer)."""
    return _remove_shm_files(lambda pid: not psutil.pid_exists(pid))


def _orphaned() -> None:
    """The trainer is gone: free this worker's shared memory and leave at once (no atexit:
    joining the result queue would block forever)."""
    own = os.getpid()
    _remove_shm_files(lambda pid: pid == own)
    os._exit(1)


class WorkerInit:
    """``worker_init_fn``: seed the worker, and make it die with the process that started it
    (Linux parent-death signal through prctl, plus a thread that watches ``os.getppid()``)."""

    def __init__(self) -> None:
        self.parent = os.getpid()  # built in the trainer process

    def __call__(self, worker_id: int) -> None:
        seed_worker(worker_id)
        signal.signal(signal.SIGTERM, lambda *_: _orphaned())
        with contextlib.suppress(OSError, AttributeError):  # not Linux: the watchdog alone
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != self.parent:  # died before the signal was armed
            _orphaned()
        threading.Thread(target=self._watch, name="ppise-parent-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while os.getppid() == self.parent:
            time.sleep(WATCH_SECONDS)
        _orphaned()


_thread_errors: List[BaseException] = []
_active = [0]  # iterations in progress; outside them the previous hook handles everything
_previous_hook = threading.excepthook


def _capture_hook(args: Any) -> None:
    from_reader = isinstance(args.exc_value, PpiseError) or "_thread_loop" in getattr(args.thread, "name", "")
    if _active[0] and isinstance(args.exc_value, Exception) and from_reader:
        _thread_errors.append(args.exc_value)  # re-raised by the iterating thread, no double report
        return
    _previous_hook(args)


def _rebuild(err: BaseException) -> BaseException:
    """The worker's error with its own message (paddle wraps it as 'caught X with message: ...')."""
    text, kind = str(err).rstrip(), type(err)
    for prefix in (f"{kind.__module__}.{kind.__qualname__}: ", f"{kind.__qualname__}: "):
        at = text.rfind("\n" + prefix)
        if at >= 0:
            text = text[at + 1 + len(prefix):]
            break
    try:
        return kind(text)
    except Exception:  # an exception type that cannot be built from one message
        return RuntimeError(str(err))


def _reader_error(timeout: float = 5.0) -> Optional[BaseException]:
    """The reader thread's error; it kills the queue just before raising, so wait a little."""
    deadline = time.monotonic() + timeout
    while not _thread_errors and time.monotonic() < deadline:
        time.sleep(0.01)
    return _thread_errors.pop(0) if _thread_errors else None


def _shutdown(it: Any) -> None:
    """Stop the workers now: paddle only does it on StopIteration or in ``__del__``, and the
    traceback we raise keeps the iterator alive (the interpreter then hangs at exit)."""
    steps = (getattr(getattr(it, "_reader", None), "shutdown", None), getattr(it, "_try_shutdown_all", None))
    for step in filter(None, steps):
        with contextlib.suppress(Exception):  # best effort, the worker's error matters more
            step()


class DataLoader(paddle.io.DataLoader):
    """``paddle.io.DataLoader`` whose worker errors keep their type and message."""

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            return self._in_main_thread()
        global _previous_hook
        if threading.excepthook is not _capture_hook:  # chain whatever hook is current
            _previous_hook, threading.excepthook = threading.excepthook, _capture_hook
        return self._guarded(super().__iter__())  # paddle's __call__ comes here too

    def _in_main_thread(self) -> Iterator[List[paddle.Tensor]]:
        """num_workers=0: load here. Paddle's single-process iterator reads in a thread that
        dies silently on a dataset error, leaving the main thread blocked forever."""
        collate = self.collate_fn or default_collate_fn
        for indices in self.batch_sampler:
            yield [paddle.to_tensor(field) for field in collate([self.dataset[i] for i in indices])]

    def _guarded(self, it: Iterator[Any]) -> Iterator[Any]:
        _active[0] += 1
        try:
            while True:
                try:
                    batch = next(it)
                except StopIteration:
                    return
                except Exception as err:
                    _shutdown(it)
                    # a PpiseError raised in this thread is already the right error
                    worker_err = None if isinstance(err, PpiseError) else _reader_error()
                    if worker_err is None:
                        raise
                    failure, worker_err = _rebuild(worker_err), None
                else:
                    yield batch
                    continue
                # Garbage of this iterator (reference cycles through the traceback) collected in
                # the next fork's workers deadlocks there (pthread_cond_destroy): drop it, collect
                # now, and raise outside the except block (no __context__ pointing back at it).
                it = None
                gc.collect()
                raise failure
        finally:
            _active[0] -= 1


def build_dataloader(dataset: Any, batch_sampler: Any, loader_cfg: Optional[Dict[str, Any]] = None) -> DataLoader:
    """A ``paddle.io.DataLoader`` (subclass) over ``batch_sampler`` with ``loader.num_workers`` processes."""
    cfg = dict(loader_cfg or {})
    unknown = sorted(set(cfg) - set(_LOADER_KEYS))
    if unknown:
        logger.warning(f"loader: ignoring keys ppise does not use: {', '.join(unknown)}")
    num_workers = cfg.get("num_workers", 0)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"loader.num_workers={num_workers!r} must be an integer >= 0")
    if num_workers > 0:
        remove_stale_shm_files()
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                      use_shared_memory=bool(cfg.get("use_shared_memory", True)), return_list=True,
                      worker_init_fn=WorkerInit() if num_workers > 0 else None)
