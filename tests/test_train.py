"""End-to-end training on tiny synthetic data: logs, checkpoints, resume after SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tiny import DEMO, ROOT, make_data, ok, read_log, run_tool, tiny_overrides

EPOCH_KEYS = {"epoch", "lr", "loss", "loss_cc", "loss_lp", "alpha", "num_clusters", "num_outliers", "cluster_seconds",
              "train_seconds", "ari", "nmi", "mixed_clusters", "sub_identities", "mAP", "rank1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(str(tmp_path_factory.mktemp("tiny_data")))


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """An uninterrupted 3-epoch run: the reference for the resume test."""
    out = str(tmp_path_factory.mktemp("full"))
    proc = ok(run_tool("tools/train.py", tiny_overrides(data, out, epochs=3)))
    return out, proc


def test_training_writes_log_checkpoints_and_config(full_run):
    out, proc = full_run
    log = read_log(out)
    assert [r["epoch"] for r in log] == [1, 2, 3]
    for rec in log:
        assert EPOCH_KEYS <= set(rec), EPOCH_KEYS - set(rec)
        assert np.isfinite(rec["loss"]) and rec["num_clusters"] >= 2
    alphas = [r["alpha"] for r in log]
    assert alphas == sorted(alphas) and alphas[0] > 0  # PLI rises with the global iteration
    model_dir = os.path.join(out, "RecModel")
    for prefix in ("latest", "best_model", "epoch_1", "epoch_3"):
        for suffix in (".pdparams", ".pdopt", ".pdstates"):
            assert os.path.isfile(os.path.join(model_dir, prefix + suffix)), prefix + suffix
    assert os.path.isfile(os.path.join(out, "config.yaml"))
    assert "images/s" in proc.stdout and "eta" in proc.stdout


def test_refuses_to_overwrite_another_run(full_run, data):
    out, _ = full_run
    proc = run_tool("tools/train.py", tiny_overrides(data, out, epochs=1))
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "Global.checkpoints" in proc.stderr


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Poll for ``path`` (checkpoint files appear by atomic rename, so existence means complete)."""
    start = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, f"training ended early: {proc.stdout.read()[-2000:]}"
        assert time.time() - start < timeout, f"{path} never appeared"
        time.sleep(0.02)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(full_run, data, tmp_path):
    """Kill during epoch 2, resume from latest: same epochs, memory, schedule and final weights."""
    import paddle

    ref_out, _ = full_run
    out = str(tmp_path / "killed")
    args = [sys.executable, os.path.join(ROOT, "tools/train.py"), "-c", DEMO]
    for o in tiny_overrides(data, out, epochs=3):
        args += ["-o", o]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    _wait_for(os.path.join(out, "RecModel", "latest.pdstates"), proc)  # the first latest: epoch 1
    proc.send_signal(signal.SIGKILL)  # epoch 2 has just begun (clustering)
    proc.wait()
    assert [r["epoch"] for r in read_log(out)] in ([], [1])  # the log line may follow the checkpoint

    latest = os.path.join(out, "RecModel", "latest")
    states = paddle.load(latest + ".pdstates")
    assert states["epoch"] == 1
    ok(run_tool("tools/train.py", tiny_overrides(data, out, epochs=3) + [f"Global.checkpoints={latest}"]))

    resumed, ref = read_log(out), read_log(ref_out)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for a, b in zip(resumed, ref):
        assert a["lr"] == pytest.approx(b["lr"]) and a["alpha"] == pytest.approx(b["alpha"])
        assert a["num_clusters"] == b["num_clusters"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    final = paddle.load(os.path.join(out, "RecModel", "latest.pdstates"))
    ref_final = paddle.load(os.path.join(ref_out, "RecModel", "latest.pdstates"))
    assert final["global_iter"] == ref_final["global_iter"] == 12
    np.testing.assert_allclose(final["memory"], ref_final["memory"], atol=1e-5)
    w = paddle.load(os.path.join(out, "RecModel", "latest.pdparams"))
    w_ref = paddle.load(os.path.join(ref_out, "RecModel", "latest.pdparams"))
    assert max(float(np.abs(w[k].numpy() - w_ref[k].numpy()).max()) for k in w_ref) < 1e-4
