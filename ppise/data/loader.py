"""Build datasets, samplers and ``paddle.io.DataLoader``s from PaddleClas ``DataLoader`` sections.

Batches are ``[images float32 [B, 3, H, W], pids int64 [B], camids int64 [B], idx int64 [B]]``.
Worker processes: paddle seeds numpy / random / paddle in each worker from a base seed drawn
from the main process's numpy RNG every time an iterator starts, so seeding the main process
makes augmentation reproducible and different per epoch; ``seed_worker`` re-applies that seed
explicitly. Workers die with the trainer (``WorkerInit``: parent-death signal and a parent
watchdog) and unlink their shared-memory batches; files of dead workers are removed when the
next loader starts.

Errors keep their type and message. With ``num_workers: 0`` batches load in the calling
thread (paddle's single-process iterator reads in a thread that dies silently on a dataset
error and leaves the main thread blocked forever). With workers, paddle 3.3 re-raises a
worker's exception in its background reader thread and the main thread only sees
``SystemError: Blocking queue is killed``; ``DataLoader`` records the reader thread's error
(chained ``threading.excepthook``) and re-raises it in the main thread with the worker's own
message, so a DataError still names the unreadable image.
"""
from __future__ import annotations

import ctypes
import gc
import os
import random
import re
import signal
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import paddle
from paddle.io.dataloader.collate import default_collate_fn

from ..errors import ConfigError, PpiseError
from ..registry import DATASETS, SAMPLERS
from ..utils.logger import logger
from .transforms import build_transforms

_LOADER_KEYS = ("num_workers", "use_shared_memory")


def _lookup(registry: Any, name: Any, where: str) -> Any:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} must name a registered {registry.kind}; registered: {', '.join(registry.names())}")
    return registry.get(name, where=where)


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


# ------------------------------------------------------------------ workers die with their parent
# Paddle's own ParentWatchDog only looks between batches, and an orphan then hangs at exit
# joining its result queue's feeder thread (nobody reads the pipe): after a kill -9 of the
# trainer, workers lived on for many minutes with their /dev/shm/paddle_<pid>_* batches.
SHM_DIR = "/dev/shm"
_SHM_FILE = re.compile(r"^paddle_(\d+)_")  # paddle's mmap allocator: paddle_<creating pid>_<n>_<random>
_PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.2


def _remove_shm_files(doomed) -> int:
    """Unlink the ``/dev/shm/paddle_<pid>_*`` files for which ``doomed(path, pid)`` is true."""
    removed = 0
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for name in names:
        match = _SHM_FILE.match(name)
        path = os.path.join(SHM_DIR, name)
        try:
            if match and doomed(path, int(match.group(1))):
                os.unlink(path)
                removed += 1
        except OSError:
            pass
    return removed


def remove_own_shm_files(pid: Optional[int] = None) -> int:
    """Unlink the ``/dev/shm/paddle_<pid>_*`` segments of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return _remove_shm_files(lambda path, owner: owner == pid)


def remove_stale_shm_files() -> int:
    """Unlink this user's ``/dev/shm/paddle_<pid>_*`` files whose creating process is gone
    (left by workers killed before they could clean up, e.g. by the OOM killer)."""
    return _remove_shm_files(lambda path, owner: os.stat(path).st_uid == os.getuid() and not _alive(owner))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _orphaned() -> None:
    """The trainer is gone: free this worker's shared memory and leave at once (no atexit:
    joining the result queue would block forever)."""
    remove_own_shm_files()
    os._exit(1)


class WorkerInit:
    """``worker_init_fn``: seed the worker, and make it die with the process that started it
    (Linux parent-death signal through prctl, plus a thread that watches ``os.getppid()``)."""

    def __init__(self) -> None:
        self.parent = os.getpid()  # built in the trainer process

    def __call__(self, worker_id: int) -> None:
        seed_worker(worker_id)
        signal.signal(signal.SIGTERM, lambda *_: _orphaned())
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the watchdog alone
            pass
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
    try:
        return type(err)(_worker_message(err))
    except Exception:  # an exception type that cannot be built from one message
        return RuntimeError(str(err))


def _worker_message(err: BaseException) -> str:
    """Keep the worker's own message from paddle's 'caught X with message: <traceback>' text."""
    text, kind = str(err).rstrip(), type(err)
    for prefix in (f"{kind.__module__}.{kind.__qualname__}: ", f"{kind.__qualname__}: "):
        at = text.rfind("\n" + prefix)
        if at >= 0:
            return text[at + 1 + len(prefix):]
    return text


def _shutdown(it: Any) -> None:
    """Stop the workers now: paddle only does it on StopIteration or in ``__del__``, and the
    traceback we raise keeps the iterator alive (the interpreter then hangs at exit)."""
    steps = (getattr(getattr(it, "_reader", None), "shutdown", None), getattr(it, "_try_shutdown_all", None))
    for step in steps:
        if step is not None:
            try:
                step()
            except Exception:  # noqa: BLE001 - best effort, the worker's error matters more
                pass


class DataLoader(paddle.io.DataLoader):
    """``paddle.io.DataLoader`` whose worker errors keep their type and message."""

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            return self._in_main_thread()
        global _previous_hook
        if threading.excepthook is not _capture_hook:  # chain whatever hook is current
            _previous_hook, threading.excepthook = threading.excepthook, _capture_hook
        return self._guarded(super().__iter__())

    __call__ = __iter__

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
                failure = None
                try:
                    batch = next(it)
                except StopIteration:
                    return
                except Exception as err:
                    _shutdown(it)
                    worker_err = self._wait_for_thread_error(err)
                    if worker_err is None:
                        raise
                    failure, worker_err = _rebuild(worker_err), None
                if failure is not None:
                    # The reader thread's traceback reaches paddle's iterator through reference
                    # cycles. Garbage still alive at the next fork is collected inside the new
                    # workers, where destroying the iterator's queue deadlocks
                    # (pthread_cond_destroy). So drop every reference, collect now, and raise
                    # outside the except block (no __context__ pointing back at it).
                    it = None
                    gc.collect()
                    raise failure
                yield batch
        finally:
            _active[0] -= 1

    @staticmethod
    def _wait_for_thread_error(err: Exception, timeout: float = 5.0) -> Optional[BaseException]:
        if isinstance(err, PpiseError):
            return None  # raised in this thread: already the right error
        deadline = time.monotonic() + timeout  # the reader thread kills the queue just before raising
        while not _thread_errors and time.monotonic() < deadline:
            time.sleep(0.01)
        return _thread_errors.pop(0) if _thread_errors else None


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
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        use_shared_memory=bool(cfg.get("use_shared_memory", True)),
        worker_init_fn=WorkerInit() if num_workers > 0 else None,
        return_list=True,
    )
