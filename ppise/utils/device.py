"""Device selection from ``Global.device`` and the CPU thread count that measured fastest.

``gpu`` is the launcher's GPU for this process (else GPU 0), ``gpu:N`` GPU N of those this
process sees (refused under the launcher: every process would share it); which GPUs a run may
use is chosen outside the config, as in PaddleClas (``CUDA_VISIBLE_DEVICES``, ``--gpus``).
The GPU, XPU and NPU paths are untested here (no accelerator on the development machines).
On CPU a training step gets one thread unless the model is big enough to gain from more
(``tune_cpu_threads``), eval-mode extraction the process's share of the cores, oneDNN is on;
the README's "CPU threads" table holds the measurements behind these choices.
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

from ..errors import ConfigError
from .logger import logger

DEFAULT_CPU_THREADS = 1  # until the model is measured (and for small models)
DEFAULT_USE_MKLDNN = True
PARALLEL_MIN_GMAC = 0.5  # multiply-adds per image from which a training step gains from >1 thread
_DEVICE_RE = re.compile(r"^(cpu|gpu|xpu|npu)(?::(\d+))?$")
_state = {"cpu": False, "threads": DEFAULT_CPU_THREADS, "auto": False}  # what setup_device chose


DEVICE_CHOICES = ("cpu", "gpu", "gpu:N", "xpu", "xpu:N", "npu", "npu:N")


def parse_device(text: str, strict: bool = True) -> Optional[Tuple[str, Optional[int]]]:
    """``'gpu:1'`` -> ``('gpu', 1)``, ``'cpu'`` -> ``('cpu', None)``; ``cpu:N`` is not a device."""
    m = _DEVICE_RE.match(text.strip().lower()) if isinstance(text, str) else None
    if m is None or (m.group(1) == "cpu" and m.group(2) is not None):
        if strict:
            raise ConfigError(f"Global.device must be one of {', '.join(DEVICE_CHOICES)}, got {text!r}")
        return None
    return m.group(1), (int(m.group(2)) if m.group(2) is not None else None)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def cpu_threads(glob: Dict[str, Any]) -> int:
    return int(glob.get("cpu_threads") or DEFAULT_CPU_THREADS)


def prepare_env(glob: Dict[str, Any]) -> None:
    """Set thread-pool environment variables (inherited by data loader workers); call before
    paddle is imported. The intra-op pool may grow later (``tune_cpu_threads``)."""
    if parse_device(glob.get("device", "cpu"))[0] == "cpu":
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(cpu_threads(glob))


def _set_threads(threads: int) -> None:
    with contextlib.suppress(Exception):  # optional API across paddle versions
        from paddle.base import core

        core.set_num_threads(threads)
    with contextlib.suppress(Exception):
        import faiss

        faiss.omp_set_num_threads(cpu_count())  # the kNN search is one big matmul: use every core


def _accelerator_place(kind: str, index: Optional[int]) -> str:
    """Untested here (no accelerator on the development machines)."""
    if index is not None and _local_processes() > 1:
        raise ConfigError(
            f"Global.device={kind}:{index} in a {_local_processes()}-process launch would put "
            f"every process on {kind} {index}: use Global.device={kind} and choose devices with "
            f"'python -m paddle.distributed.launch --gpus ...' (or CUDA_VISIBLE_DEVICES)")
    import paddle

    if kind == "gpu" and not paddle.device.is_compiled_with_cuda():
        raise ConfigError("Global.device is 'gpu' but this paddle build has no CUDA: install "
                          "paddlepaddle-gpu (see README, 'GPU') or run with -o Global.device=cpu")
    if kind == "xpu" and not paddle.device.is_compiled_with_xpu():
        raise ConfigError("Global.device is 'xpu' but this paddle build has no XPU support (paddlepaddle-xpu)")
    if kind == "npu" and "npu" not in paddle.device.get_all_custom_device_type():
        raise ConfigError("Global.device is 'npu' but no NPU plugin is installed (paddle-custom-npu)")
    if kind == "gpu" and index is not None and index >= paddle.device.cuda.device_count():
        raise ConfigError(f"Global.device=gpu:{index} but this process sees {paddle.device.cuda.device_count()} GPU(s) "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    # Without an index paddle takes the launcher's device for this process (FLAGS_selected_gpus), else 0.
    paddle.set_device(kind if index is None else f"{kind}:{index}")
    place = str(paddle.device.get_device())
    logger.info(f"device {place} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return place


def setup_device(glob: Dict[str, Any]) -> str:
    """Select the paddle device named by ``Global.device``; return the place string."""
    import paddle

    kind, index = parse_device(glob.get("device", "cpu"))
    if kind != "cpu":
        _state.update(cpu=False)
        return _accelerator_place(kind, index)
    threads = cpu_threads(glob)
    _set_threads(threads)
    auto = glob.get("cpu_threads") is None
    _state.update(cpu=True, threads=threads, auto=auto)
    use_mkldnn = glob.get("use_mkldnn")
    use_mkldnn = DEFAULT_USE_MKLDNN if use_mkldnn is None else bool(use_mkldnn)
    try:
        paddle.set_flags({"FLAGS_use_mkldnn": use_mkldnn})
    except Exception as err:  # noqa: BLE001 - flag missing on some builds
        logger.warning(f"could not set FLAGS_use_mkldnn: {err}")
    paddle.set_device("cpu")
    how = "chosen from the model's size once it is built" if auto else "Global.cpu_threads"
    logger.info(f"device cpu: {threads} thread(s) per process ({how}), oneDNN {'on' if use_mkldnn else 'off'} "
                f"(Global.cpu_threads / Global.use_mkldnn)")
    return "cpu"


def model_gmac(model, image_shape: Sequence[int]) -> float:
    """Multiply-adds (GMAC) of one forward pass of one image (convolutions and linears), in
    eval mode without gradients so that batch-norm statistics are left untouched."""
    import numpy as np
    import paddle

    macs = [0]

    def count(layer, inputs, output):  # weights: conv [out, in, kh, kw], linear [in, out]
        shape = layer.weight.shape
        fan_in = shape[1:] if isinstance(layer, paddle.nn.Conv2D) else shape[:1]
        macs[0] += int(np.prod(output.shape)) * int(np.prod(fan_in))

    hooks = [sub.register_forward_post_hook(count) for sub in model.sublayers(include_self=True)
             if isinstance(sub, (paddle.nn.Conv2D, paddle.nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1] + [int(v) for v in image_shape], dtype="float32"))
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    return macs[0] / 1e9


def choose_cpu_threads(gmac: float, cores: int, processes: int, load: float) -> Tuple[int, str]:
    """Threads for a training step from the model's GMAC per image and the idle cores; and why."""
    share = max(1, cores // max(1, processes))
    if gmac < PARALLEL_MIN_GMAC:
        return 1, f"model {gmac:.3f} GMAC/image < {PARALLEL_MIN_GMAC}: small convolutions run fastest on 1 thread"
    idle = max(1, int(cores - load + 0.5) // max(1, processes))
    threads = min(share, idle)
    why = f"model {gmac:.2f} GMAC/image >= {PARALLEL_MIN_GMAC}, {share} core(s) per process"
    if threads < share:
        why += f", load average {load:.2f} leaves {idle} idle"
    return threads, why


def tune_cpu_threads(model, glob: Dict[str, Any]) -> int:
    """Apply the automatic CPU thread choice for ``model`` (no-op unless ``Global.cpu_threads`` is null on CPU)."""
    if not (_state["cpu"] and _state["auto"]):
        return _state["threads"]
    try:
        gmac = model_gmac(model, glob.get("image_shape") or (3, 256, 128))
    except Exception as err:  # noqa: BLE001 - a model that cannot run one image keeps the default
        logger.warning(f"cpu threads: could not measure the model ({type(err).__name__}: {err}); keeping {_state['threads']}")
        return _state["threads"]
    threads, why = choose_cpu_threads(gmac, cpu_count(), _local_processes(), os.getloadavg()[0])
    if threads != _state["threads"]:
        _set_threads(threads)
    _state["threads"] = threads
    logger.info(f"cpu threads per process: {threads} ({why}; -o Global.cpu_threads=N to fix)")
    return threads


def _local_processes() -> int:
    return max(1, int(os.environ.get("PADDLE_LOCAL_SIZE") or os.environ.get("PADDLE_TRAINERS_NUM") or 1))


@contextlib.contextmanager
def extraction_threads() -> Iterator[None]:
    """Inside: this process's share of the cores as intra-op threads, for eval-mode extraction
    (faster with them, unlike a small training step); only in a CPU run ``setup_device`` made."""
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
