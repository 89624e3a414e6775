"""Parity with PaddleClas (tools/parity_check.py): the real check, run once, must pass; a
one-weight perturbation must fail it. The metric reference it uses is tested in test_metric.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ppise.errors import ConfigError
from ppise.parity.context import resolve_image_shape
from ppise.config import get_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OFFICIAL = os.path.abspath(os.path.join(ROOT, "..", "shared", "paddleclas", "ResNet50_UReID_infer.yaml"))
TOOL = os.path.join(ROOT, "tools", "parity_check.py")
needs_official = pytest.mark.skipif(not os.path.isfile(OFFICIAL), reason=f"{OFFICIAL} not present")
# Small and fast: 64x32 inputs, 3 images, 8 synthetic identities, several query blocks.
FAST = ["--image-shape", "3", "64", "32", "--num-images", "3", "--synthetic-ids", "8", "--num-workers", "0",
        "-o", "Global.sim_block_size=4"]


def run_check(tmp_path, *extra: str) -> tuple:
    out_json = tmp_path / "rows.json"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, TOOL, "-c", OFFICIAL, *FAST, "--json", str(out_json),
                           "--work-dir", str(tmp_path / "work"), *extra],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    rows = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    return proc, rows


@pytest.fixture(scope="module")
def full_check(tmp_path_factory):
    return run_check(tmp_path_factory.mktemp("parity"))


def _rows(rows, section):
    return [r for r in rows if r["section"] == section]


@needs_official
def test_check_passes_on_random_paddleclas_weights(full_check):
    proc, rows = full_check
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert rows and not [r for r in rows if r["status"] == "FAIL"]
    assert "| PASS" in proc.stdout and " 0 failed" in proc.stdout
    for section in ("model", "deploy", "metrics", "roundtrip"):
        assert [r for r in _rows(rows, section) if r["status"] == "PASS"], section


@needs_official
def test_features_and_metrics_within_tolerance(full_check):
    _, rows = full_check
    feats = [r for r in rows if r["section"] in ("model", "deploy", "roundtrip") and r["diff"] is not None]
    items = {r["item"].split(" (")[0] for r in feats}
    assert {"features", "neck", "backbone", "RecPredictor vs ppise dygraph", "predict_rec.py vs ppise dygraph",
            "paddleclas dygraph vs RecPredictor"} <= items
    assert all(float(r["diff"]) <= 1e-5 for r in feats)
    metrics = {r["item"].split(" (")[0]: float(r["diff"]) for r in _rows(rows, "metrics") if r["diff"] is not None}
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP_upstream"):
        assert metrics[key] <= 1e-6
    block_note = [r for r in _rows(rows, "metrics") if r["item"] == "evaluation set"][0]
    assert block_note["ppise"] == "block 4"  # the -o override reached both implementations


@needs_official
def test_roundtrip_names_the_head_difference(full_check):
    _, rows = full_check
    rt = {r["item"]: r for r in _rows(rows, "roundtrip")}
    branch = rt["ppise ISE ckpt -> paddleclas RecModel, inference branch (strict)"]
    assert branch["status"] == "PASS" and branch["paddleclas"] == "0 missing, 0 unexpected, 0 mismatched"
    full = rt["ppise ISE ckpt -> full official Arch (with Head)"]
    assert full["status"] == "PASS" and full["paddleclas"].startswith("2 missing")
    assert "head.fc.weight [2048, 751]" in full["detail"] and "head.fc.bias [751]" in full["detail"]
    assert rt["paddleclas full weights -> ppise ISE model (strict)"]["ppise"].startswith("refused")


@needs_official
def test_one_perturbed_weight_fails_the_check(tmp_path):
    proc, rows = run_check(tmp_path, "--sections", "model", "--perturb", "neck.feat_bn.weight=0.05")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    failed = {r["item"].split(" (")[0] for r in rows if r["status"] == "FAIL"}
    assert {"neck", "features"} <= failed
    assert "backbone" not in failed  # the change sits after the backbone: the check localises it
    assert "| FAIL" in proc.stdout


def test_missing_weights_file_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, "-c", OFFICIAL if os.path.isfile(OFFICIAL) else "x.yaml",
                           "--weights", str(tmp_path / "nope.pdparams")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "nope.pdparams" in proc.stderr and "--weights" in proc.stderr


@needs_official
def test_official_image_shape_is_taken_from_the_eval_resize():
    cfg = get_config(OFFICIAL)
    shape, note = resolve_image_shape(cfg, None)
    assert shape == [3, 256, 128] and cfg["Global"]["image_shape"] == [3, 256, 128]
    assert "[3, 128, 256]" in note
    cfg = get_config(OFFICIAL)
    shape, _ = resolve_image_shape(cfg, [3, 64, 32])
    assert cfg["DataLoader"]["Eval"]["Gallery"]["dataset"]["transform_ops"][0]["ResizeImage"]["size"] == [32, 64]
    with pytest.raises(ConfigError, match="--image-shape"):
        resolve_image_shape(get_config(OFFICIAL), [3, 0, 32])
