"""Device selection from ``Global.device`` and the CPU thread count that measured fastest.

Devices: ``cpu``, ``gpu`` (the launcher's GPU for this process, else GPU 0), ``gpu:N``
(GPU N of the ones this process sees), and ``xpu`` / ``xpu:N`` / ``npu`` / ``npu:N`` where the
installed Paddle build (or a custom-device plugin) provides them. As in PaddleClas, which
GPUs a run may use is chosen outside the config: ``CUDA_VISIBLE_DEVICES=2,3`` or
``python -m paddle.distributed.launch --gpus 2,3``; with the launcher, every process takes
its own GPU and ``gpu:N`` is refused (it would put all processes on one GPU). The GPU, XPU
and NPU paths are coded but untested here (the development machines have no accelerator).

CPU threads (``Global.cpu_threads``; null = automatic). ``benchmarks/bench_train_step.py``
timed a training step with 1 and 2 intra-op threads on the 2-core development machine:
ResNet-50 256x128 (~4 GMAC per image) is 1.6x faster with 2 threads on an idle machine,
while the demo ResNetMini (~0.004 GMAC per image) is faster with 1 (threads cost more to
synchronise than its small convolutions gain), and both lose badly from 2 threads when
other jobs already use the cores (ResNet-50: 61.8 s vs 27.6 s). So the automatic choice is
made once the model exists (``tune_cpu_threads``, called by the model builder): it counts
the model's multiply-adds for one image and gives models of at least
``PARALLEL_MIN_GMAC`` the process's share of the cores that are idle (load average at
start-up), others one thread; the log states the choice and why.
oneDNN is on: it costs training little or nothing and makes eval-mode feature extraction
(clustering, evaluation) much faster: the deploy and parity tests, which are mostly
extraction, took 2.7x longer with it off. Override with ``Global.use_mkldnn``.
Feature extraction (eval mode, no gradients) always uses the process's share of the cores
(``--phase extract`` of bench_cpu_settings.py: ResNet-50, batch 32, 8.4 s with 1 thread,
5.7 s with 2). More throughput on a multi-core CPU comes from more processes: data loader
workers and ``paddle.distributed.launch --nproc_per_node N``. The clustering kNN uses all cores.
"""
from __future__ import annotations

import os
import contextlib
import re
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

from ..errors import ConfigError
from .logger import logger

DEFAULT_CPU_THREADS = 1  # until the model is measured (and for small models)
DEFAULT_USE_MKLDNN = True
PARALLEL_MIN_GMAC = 0.5  # multiply-adds per image from which a training step gains from >1 thread
_DEVICE_RE = re.compile(r"^(cpu|gpu|xpu|npu)(?::(\d+))?$")
_state = {"cpu": False, "threads": DEFAULT_CPU_THREADS, "auto": False}  # what setup_device chose


class _DeviceChoices(tuple):
    """``Global.device`` values for config validation: ``x in DEVICE_CHOICES`` accepts ``gpu:3``."""

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and parse_device(value, strict=False) is not None


DEVICE_CHOICES = _DeviceChoices(("cpu", "gpu", "gpu:N", "xpu", "xpu:N", "npu", "npu:N"))


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
    """Set thread-pool environment variables; call before paddle is imported.

    The automatic choice starts at one thread (data loader workers inherit this); the
    intra-op pool grows at run time when ``tune_cpu_threads`` decides so.
    """
    if parse_device(glob.get("device", "cpu"))[0] == "cpu":
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


def _accelerator_place(kind: str, index: Optional[int]) -> str:
    """Untested here (no accelerator on the development machines)."""
    launched = _local_processes() > 1
    if index is not None and launched:
        raise ConfigError(
            f"Global.device={kind}:{index} in a {_local_processes()}-process launch would put every process on "
            f"{kind} {index}: use Global.device={kind} and choose devices with "
            f"'python -m paddle.distributed.launch --gpus ...' (or CUDA_VISIBLE_DEVICES)"
        )
    import paddle

    if kind == "gpu" and not paddle.device.is_compiled_with_cuda():
        raise ConfigError(
            "Global.device is 'gpu' but this paddle build has no CUDA: install paddlepaddle-gpu "
            "(see README, 'GPU') or run with -o Global.device=cpu"
        )
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
    """Multiply-adds (GMAC) of one eval-mode forward pass of one image (convolutions and linears).

    Eval mode and no gradients: batch-norm statistics and parameters are left untouched.
    """
    import numpy as np
    import paddle

    macs = [0]

    def conv_hook(layer, inputs, output):
        kh, kw = layer.weight.shape[2:]
        macs[0] += int(np.prod(output.shape)) * (layer.weight.shape[1]) * kh * kw

    def linear_hook(layer, inputs, output):
        macs[0] += int(np.prod(output.shape)) * layer.weight.shape[0]

    hooks = []
    for sub in model.sublayers(include_self=True):
        if isinstance(sub, paddle.nn.Conv2D):
            hooks.append(sub.register_forward_post_hook(conv_hook))
        elif isinstance(sub, paddle.nn.Linear):
            hooks.append(sub.register_forward_post_hook(linear_hook))
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
