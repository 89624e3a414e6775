"""CPU thread settings: one thread for training steps, the process's share of the cores for extraction."""
from __future__ import annotations

import pytest
from paddle.base import core

from ppise.utils import device


@pytest.fixture
def calls(monkeypatch):
    """Record the thread counts handed to paddle (the real setter still runs)."""
    seen = []
    real = core.set_num_threads

    def spy(n):
        seen.append(n)
        real(n)

    import faiss

    faiss_threads = faiss.omp_get_max_threads()
    monkeypatch.setattr(core, "set_num_threads", spy)
    monkeypatch.setattr(device, "_state", {"cpu": False, "threads": 1})
    yield seen
    faiss.omp_set_num_threads(faiss_threads)  # setup_device gave faiss the (patched) core count


def test_extraction_threads_switch_and_restore(calls, monkeypatch):
    monkeypatch.setattr(device, "cpu_count", lambda: 4)
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    monkeypatch.delenv("PADDLE_TRAINERS_NUM", raising=False)
    device.setup_device({"device": "cpu"})
    assert calls == [1]
    with device.extraction_threads():
        assert calls == [1, 4]
    assert calls == [1, 4, 1]
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")  # two launcher processes share the 4 cores
    with device.extraction_threads():
        assert calls[-1] == 2
    assert calls[-1] == 1
    with pytest.raises(RuntimeError):  # an error inside still restores the training setting
        with device.extraction_threads():
            raise RuntimeError("boom")
    assert calls[-1] == 1


def test_extraction_threads_leave_non_cpu_runs_alone(calls, monkeypatch):
    monkeypatch.setattr(device, "cpu_count", lambda: 4)
    with device.extraction_threads():  # setup_device never ran for the CPU: nothing to change
        pass
    assert calls == []


def test_device_names_and_config_choices():
    from ppise.config import get_config
    from ppise.errors import ConfigError
    from tiny import DEMO

    assert device.parse_device("gpu:1") == ("gpu", 1)
    assert device.parse_device("cpu") == ("cpu", None)
    assert device.parse_device("xpu") == ("xpu", None)
    assert get_config(DEMO, ["Global.device=gpu:3"])["Global"]["device"] == "gpu:3"
    for bad in ("cpu:1", "gpu:x", "cuda", "gpu:"):
        with pytest.raises(ConfigError, match="Global.device must be one of cpu, gpu, gpu:N"):
            get_config(DEMO, [f"Global.device={bad}"])


def test_gpu_requests_fail_clearly_without_cuda(monkeypatch):
    from ppise.errors import ConfigError

    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "2")
    with pytest.raises(ConfigError, match="--gpus"):  # gpu:N in a multi-process launch
        device.setup_device({"device": "gpu:1"})
    monkeypatch.delenv("PADDLE_LOCAL_SIZE")
    monkeypatch.delenv("PADDLE_TRAINERS_NUM", raising=False)
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        with pytest.raises(ConfigError, match="paddlepaddle-gpu"):
            device.setup_device({"device": "gpu:0"})


def test_thread_choice_follows_model_size_and_idle_cores():
    threads, why = device.choose_cpu_threads(4.05, cores=2, processes=1, load=0.1)  # ResNet-50 256x128
    assert threads == 2 and "4.05 GMAC" in why
    assert device.choose_cpu_threads(4.05, cores=2, processes=1, load=1.3)[0] == 1  # another job holds a core
    assert device.choose_cpu_threads(4.05, cores=8, processes=2, load=0.0)[0] == 4  # the process's share
    assert device.choose_cpu_threads(0.004, cores=2, processes=1, load=0.0)[0] == 1  # demo ResNetMini


def test_tune_cpu_threads_measures_the_model(calls, monkeypatch):
    import paddle

    monkeypatch.setattr(device, "cpu_count", lambda: 2)
    monkeypatch.setattr(device.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    monkeypatch.delenv("PADDLE_TRAINERS_NUM", raising=False)
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.Flatten(), paddle.nn.Linear(8 * 16 * 8, 4))
    gmac = device.model_gmac(net, (3, 16, 8))
    assert gmac * 1e9 == 16 * 8 * 8 * 3 * 9 + 4 * 8 * 16 * 8
    assert net.training  # restored after the eval-mode pass
    device.setup_device({"device": "cpu", "cpu_threads": None})
    assert device.tune_cpu_threads(net, {"image_shape": [3, 16, 8]}) == 1  # tiny: one thread
    monkeypatch.setattr(device, "PARALLEL_MIN_GMAC", 0.0)
    assert device.tune_cpu_threads(net, {"image_shape": [3, 16, 8]}) == 2 and calls[-1] == 2
    device.setup_device({"device": "cpu", "cpu_threads": 1})  # fixed by the config: left alone
    assert device.tune_cpu_threads(net, {"image_shape": [3, 16, 8]}) == 1 and calls[-1] == 1
