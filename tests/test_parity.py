"""Parity with PaddleClas (tools/parity_check.py): the real check, run once, must pass; a
one-weight perturbation must fail it; the independent PaddleClas metric re-implementation
must agree with hand-computed values and with ppise's paddleclas protocol."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from ppise.errors import ConfigError
from ppise.parity.context import resolve_image_shape
from ppise.parity.metrics_reference import block_sections, paddleclas_retrieval_metrics
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


# --- the independent PaddleClas metric re-implementation --------------------------------------


def _one_hot_feats(sims):
    """Query = e0; gallery rows whose dot product with e0 is ``sims`` (unit norm not needed)."""
    sims = np.asarray(sims, np.float32)
    g = np.zeros((sims.size, sims.size + 1), np.float32)
    g[:, 0] = sims
    g[np.arange(sims.size), np.arange(1, sims.size + 1)] = 1.0
    q = np.zeros((1, sims.size + 1), np.float32)
    q[0, 0] = 1.0
    return q, g


def test_reference_matches_hand_computed_paddleclas_semantics():
    # gallery g2 has the query's id and camera: PaddleClas zeroes it (sim 0, stays ranked, no hit)
    q, g = _one_hot_feats([0.5, 0.8, 0.95, 0.9, -0.2])
    out = paddleclas_retrieval_metrics(q, g, [1], [1, 2, 1, 3, 1], [0], [1, 0, 0, 0, 2], topk=(1, 3))
    # ranking g3, g1, g0, g2(zeroed), g4: hits at ranks 3 and 5
    assert out["mAP"] == pytest.approx((1 / 3 + 2 / 5) / 2, abs=1e-7)
    assert out["recall1"] == 0.0 and out["recall3"] == 1.0
    assert out["mINP"] == pytest.approx(2 / 4, abs=1e-7)  # upstream divides by the 0-based index 4


def test_reference_block_weighting_and_queries_without_match():
    q1, g = _one_hot_feats([0.9, 0.1, 0.5])
    q = np.concatenate([q1, q1, q1])
    # q0 id 1 (hit g1 at rank 3), q1 id 9 (no match anywhere), q2 id 2 (hit g0 at rank 1)
    out = paddleclas_retrieval_metrics(q, g, [1, 9, 2], [2, 1, 3], topk=(1,), block_size=2)
    assert block_sections(3, 2) == [2, 1]
    # block 1 keeps only q0 (AP 1/3) and weighs 2/3; block 2 is q2 (AP 1) weighing 1/3
    assert out["mAP"] == pytest.approx(1 / 3 * 2 / 3 + 1.0 / 3, abs=1e-7)
    assert out["recall1"] == pytest.approx(0.0 * 2 / 3 + 1.0 / 3, abs=1e-7)


def test_reference_agrees_with_ppise_paddleclas_protocol_on_random_data():
    from ppise.metric import evaluate

    rng = np.random.default_rng(3)
    qf = rng.normal(size=(70, 16)).astype(np.float32)
    gf = rng.normal(size=(150, 16)).astype(np.float32)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    qid, gid = rng.integers(0, 30, 70), rng.integers(0, 25, 150)  # ids >= 25: queries without a match
    qcam, gcam = rng.integers(0, 3, 70), rng.integers(0, 3, 150)
    for block in (64, 16, 7):
        ref = paddleclas_retrieval_metrics(qf, gf, qid, gid, qcam, gcam, topk=(1, 5, 10), block_size=block)
        ours = evaluate(qf, gf, qid, gid, qcam, gcam, protocol="paddleclas", topk=(1, 5, 10), block_size=block)
        for rk, ok in (("mAP", "mAP"), ("recall1", "rank1"), ("recall5", "rank5"), ("recall10", "rank10")):
            assert abs(ref[rk] - ours[ok]) <= 1e-6, (block, rk)
        if math.isfinite(ref["mINP"]):
            assert abs(ref["mINP"] - ours["mINP_upstream"]) <= 1e-6
        else:
            assert not math.isfinite(ours["mINP_upstream"])
