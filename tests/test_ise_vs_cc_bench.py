"""benchmarks/ise_vs_cc_demo.py: log summary and paired statistics by hand."""
from __future__ import annotations

import math

import pytest
from tiny import load_script


def _load():
    return load_script("benchmarks/ise_vs_cc_demo.py")


def test_summary_and_paired_interval():
    mod = _load()
    log = [{"epoch": 1, "ari": 0.1, "train_seconds": 2.0, "cluster_seconds": 1.0},
           {"epoch": 2, "mAP": 0.30, "ari": 0.2, "train_seconds": 2.0, "cluster_seconds": 1.0},
           {"epoch": 3, "mAP": 0.25, "ari": 0.4, "mixed_clusters": 3, "sub_identities": 7, "num_clusters": 50,
            "train_seconds": 2.0, "cluster_seconds": 1.0}]
    s = mod.summarize_log(log)
    assert (s["final_mAP"], s["best_mAP"], s["best_epoch"]) == (0.25, 0.30, 2)
    assert (s["ari"], s["mixed"], s["sub"], s["seconds"]) == (0.4, 3, 7, 9.0)
    # diffs 1, 2, 3: mean 2, sd 1, t(0.975, 2 df) = 4.302653
    m, lo, hi = mod.paired_ci([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert m == 2.0 and lo == pytest.approx(2 - half, rel=1e-5) and hi == pytest.approx(2 + half, rel=1e-5)
    results = [dict(mod.summarize_log(log), method=meth, seed=seed) for meth in ("cc", "ise") for seed in (0, 1)]
    text = mod.report(results, [0, 1])
    assert "ISE - CC:  +0.000" in text and "final mAP" in text
