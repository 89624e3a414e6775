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
