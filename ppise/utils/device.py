"""Device selection from ``Global.device`` and the CPU settings that measured fastest.

``python benchmarks/bench_cpu_settings.py`` times a training step under Paddle's default
(1 intra-op thread, oneDNN flag off), 2 threads, oneDNN on, and both. On the 2-core
development machines the default was fastest by far (ResNet-50, batch 32: 27.6 s; 2 threads
61.8 s; oneDNN 30.4 s; demo model 0.10 s vs 0.17 s), so ppise keeps one thread per process.
oneDNN is on: it costs training little or nothing (30.4 vs 27.6 s, 0.104 vs 0.102 s) and
makes eval-mode feature extraction (clustering, evaluation) much faster: the deploy and
parity tests, which are mostly extraction, took 2.7x longer with it off. Override with
``Global.cpu_threads`` / ``Global.use_mkldnn``.
Feature extraction (eval mode, no gradients) is different: it ran 1.5x faster with both
cores (``--phase extract``: ResNet-50, batch 32, 8.4 s with 1 thread, 5.7 s with ppise's
``extraction_threads``), so extraction switches to the process's share of the cores.
More throughput on a multi-core CPU comes from more processes: data loader workers and
``paddle.distributed.launch --nproc_per_node N``. The clustering kNN uses all cores.
"""
from __future__ import annotations

import os
import contextlib
from typing import Any, Dict, Iterator

from ..errors import ConfigError
from .logger import logger

DEFAULT_CPU_THREADS = 1
DEFAULT_USE_MKLDNN = True
_state = {"cpu": False, "threads": DEFAULT_CPU_THREADS}  # what setup_device chose, for extraction_threads


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def cpu_threads(glob: Dict[str, Any]) -> int:
    return int(glob.get("cpu_threads") or DEFAULT_CPU_THREADS)


def prepare_env(glob: Dict[str, Any]) -> None:
    """Set thread-pool environment variables; call before paddle is imported."""
    if glob.get("device", "cpu") == "cpu":
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(cpu_threads(glob))


def _set_threads(threads: int) -> None:
    try:
        from paddle.base import core

        core.set_num_threads(threads)
    except Exception:  # noqa: BLE001 - optional API across paddle versions
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(cpu_count())  # the kNN search is one big matmul: use every core
    except Exception:  # noqa: BLE001
        pass


def setup_device(glob: Dict[str, Any]) -> str:
    """Select the paddle device named by ``Global.device``; return the place string."""
    import paddle

    device = glob.get("device", "cpu")
    if device == "gpu":
        if not paddle.device.is_compiled_with_cuda():
            raise ConfigError(
                "Global.device is 'gpu' but this paddle build has no CUDA: install paddlepaddle-gpu "
                "(see README, 'GPU') or run with -o Global.device=cpu"
            )
        local_rank = int(os.environ.get("PADDLE_LOCAL_RANK", os.environ.get("FLAGS_selected_gpus", "0")).split(",")[0])
        place = f"gpu:{local_rank}"
        paddle.set_device(place)
        return place
    threads = cpu_threads(glob)
    _set_threads(threads)
    _state.update(cpu=True, threads=threads)
    use_mkldnn = glob.get("use_mkldnn")
    use_mkldnn = DEFAULT_USE_MKLDNN if use_mkldnn is None else bool(use_mkldnn)
    try:
        paddle.set_flags({"FLAGS_use_mkldnn": use_mkldnn})
    except Exception as err:  # noqa: BLE001 - flag missing on some builds
        logger.warning(f"could not set FLAGS_use_mkldnn: {err}")
    paddle.set_device("cpu")
    logger.info(f"device cpu: {threads} thread(s) per process, oneDNN {'on' if use_mkldnn else 'off'} "
                f"(Global.cpu_threads / Global.use_mkldnn)")
    return "cpu"


def _local_processes() -> int:
    return max(1, int(os.environ.get("PADDLE_LOCAL_SIZE") or os.environ.get("PADDLE_TRAINERS_NUM") or 1))


@contextlib.contextmanager
def extraction_threads() -> Iterator[None]:
    """Inside: this process's share of the cores as intra-op threads, for eval-mode extraction.

    A training step is fastest with one thread, but a no-grad forward pass is not (see the
    module docstring). Outside a CPU run set up by ``setup_device`` (GPU, or a library
    call), nothing changes.
    """
    threads = max(1, cpu_count() // _local_processes())
    if not _state["cpu"] or threads == _state["threads"]:
        yield
        return
    from paddle.base import core

    core.set_num_threads(threads)
    try:
        yield
    finally:
        core.set_num_threads(_state["threads"])
