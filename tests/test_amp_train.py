"""The tiny demo trained end to end with an ``AMP:`` section, with ``Global.to_static``, and
resumed across AMP on/off; the PaddleClas cost fields of the log.

On these CPUs the ``AMP`` section is accepted, logged and inert (``ppise/engine/amp.py``:
Paddle 3.3's ``auto_cast`` acts on GPU/XPU/custom devices only), so an AMP run equals the
float32 run with the same seed; the float16/bfloat16 numerics are untested here.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from tiny import make_data, ok, read_log, run_tool, tiny_overrides

AMP = ["AMP.scale_loss=128.0", "AMP.use_dynamic_loss_scaling=True", "AMP.level=O1", "AMP.dtype=float16"]
COST_LINE = re.compile(r"reader_cost: (\d+\.\d{5}) s, batch_cost: (\d+\.\d{5}) s, ips: (\d+\.\d{5}) samples/s, "
                       r"[\d.]+ images/s, eta: ")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """2-epoch runs with one seed: float32, AMP section, to_static; and a random-init evaluation."""
    data = make_data(str(tmp_path_factory.mktemp("amp_data")))
    out = {name: str(tmp_path_factory.mktemp(name)) for name in ("fp32", "amp", "static", "random")}
    procs = {
        "fp32": ok(run_tool("tools/train.py", tiny_overrides(data, out["fp32"]))),
        "amp": ok(run_tool("tools/train.py", tiny_overrides(data, out["amp"]) + AMP)),
        "static": ok(run_tool("tools/train.py", tiny_overrides(data, out["static"]) + ["Global.to_static=True"])),
    }
    ok(run_tool("tools/eval.py", tiny_overrides(data, out["random"])))  # the same seed's untrained model
    with open(os.path.join(out["random"], "eval_metrics.json"), encoding="utf-8") as f:
        random_map = json.load(f)["mAP"]
    return data, out, procs, random_map


def test_amp_and_fp32_runs_both_train_the_demo(runs):
    _, out, procs, random_map = runs
    maps = {}
    for name in ("fp32", "amp"):
        log = read_log(out[name])
        assert [r["epoch"] for r in log] == [1, 2]
        assert all(r["num_clusters"] >= 2 for r in log)  # clusters form
        maps[name] = [r["mAP"] for r in log]
        assert max(maps[name]) > random_map, (maps[name], random_map)  # training raised mAP
    print(f"mAP untrained {random_map:.4f}, fp32 {maps['fp32']}, AMP section {maps['amp']}")
    # On CPU the AMP section is refused with one clear line and the run is float32 (same seed, same numbers).
    assert "AMP (float16 O1) ignored on CPU" in procs["amp"].stderr + procs["amp"].stdout
    assert maps["amp"] == maps["fp32"]


def test_to_static_training_equals_dygraph(runs):
    _, out, procs, _ = runs
    assert "model forward compiled with paddle.jit.to_static" in procs["static"].stdout + procs["static"].stderr
    fp32, static = read_log(out["fp32"]), read_log(out["static"])
    for a, b in zip(fp32, static):  # same clusters, losses and retrieval within float tolerance
        assert a["num_clusters"] == b["num_clusters"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["mAP"] == pytest.approx(a["mAP"], abs=1e-3)


@pytest.mark.parametrize("first,then", [("amp", "fp32"), ("fp32", "amp")])
def test_checkpoints_resume_across_amp_on_and_off(runs, tmp_path, first, then):
    """Epoch 1 of one run, resumed with AMP switched, gives the other run's epoch 2 (float32 checkpoints)."""
    data, out, _, _ = runs
    resumed = str(tmp_path / "resumed")
    ov = tiny_overrides(data, resumed) + [f"Global.checkpoints={os.path.join(out[first], 'RecModel', 'epoch_1')}"]
    ok(run_tool("tools/train.py", ov + (AMP if then == "amp" else [])))
    (epoch2,) = read_log(resumed)
    reference = read_log(out[then])[1]
    assert epoch2["epoch"] == 2 and epoch2["num_clusters"] == reference["num_clusters"]
    assert epoch2["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    assert epoch2["mAP"] == pytest.approx(reference["mAP"], abs=1e-6)


def test_log_reports_reader_and_batch_cost(runs):
    _, out, procs, _ = runs
    lines = [COST_LINE.search(line) for line in procs["fp32"].stdout.splitlines() if "[Iter " in line]
    assert len(lines) == 4 and all(lines)  # print_batch_step 2, 4 iterations, 2 epochs
    for m in lines:
        reader, batch, ips = map(float, m.groups())
        assert 0 <= reader <= batch and ips > 0
    for rec in read_log(out["fp32"]):  # epoch means in train_log.jsonl
        assert rec["reader_cost"] > 0 and rec["batch_cost"] >= rec["reader_cost"]
        assert rec["ips"] == pytest.approx(rec["batch_size"] / rec["batch_cost"], rel=0.01)
        assert np.isfinite(rec["images_per_second"])
