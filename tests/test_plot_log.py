"""tools/plot_log.py on synthetic train_log.jsonl files."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from tiny import load_script

pytest.importorskip("matplotlib")


def _load():
    return load_script("tools/plot_log.py")


def _write_run(folder, seed: int, ise: bool, epochs: int = 12) -> str:
    rng = np.random.default_rng(seed + (100 if ise else 0))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "train_log.jsonl"), "w") as f:
        for e in range(1, epochs + 1):
            rec = {"epoch": e, "num_clusters": int(30 + 2 * e + rng.integers(-3, 4)),
                   "num_outliers": int(200 - 12 * e + rng.integers(-10, 10)),
                   "ari": float(min(0.95, 0.2 + 0.06 * e + (0.05 if ise else 0) + rng.normal(0, 0.02))),
                   "mixed_clusters": int(20 - e + rng.integers(0, 3)), "sub_identities": int(40 - 2 * e + rng.integers(0, 3)),
                   "loss": float(5.0 / e + rng.normal(0, 0.05)), "loss_cc": float(4.5 / e), "lr": 0.001}
            if ise:
                rec["loss_lp"] = float(0.5 / e)
            if e % 3 == 0:
                rec["mAP"] = float(0.1 + 0.03 * e + (0.03 if ise else 0) + rng.normal(0, 0.01))
                rec["rank1"] = rec["mAP"] + 0.2
            f.write(json.dumps(rec) + "\n")
        f.write('{"epoch": 13, "num_clu')  # a line torn by a crash
    return folder


def test_groups_series_and_png(tmp_path):
    mod = _load()
    runs = [_write_run(str(tmp_path / f"{name}_seed{s}"), s, name == "ise_demo")
            for name in ("ise_demo", "cc_demo") for s in range(3)]
    groups = mod.group_runs(runs)
    assert list(groups) == ["ise_demo", "cc_demo"] and all(len(v) == 3 for v in groups.values())
    logs = [mod.read_log(p) for p in groups["ise_demo"]]
    assert [r["epoch"] for r in logs[0]] == list(range(1, 13))  # torn line skipped
    epochs, vals = mod.series(logs, "mAP", 100.0)
    assert epochs.tolist() == [3, 6, 9, 12] and vals.shape == (3, 4)
    keys = [k for k, _, _ in mod.panel_keys(logs)]
    assert keys[:3] == ["mAP", "rank1", "ari"] and "loss_lp" in keys and "lr" not in keys
    out = str(tmp_path / "curves.png")
    assert mod.main(runs + ["--out", out, "--title", "ISE vs CC (synthetic log)"]) == 0
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    out2 = str(tmp_path / "labelled.png")
    assert mod.main([f"ISE={tmp_path}/ise_demo_seed*", f"CC={tmp_path}/cc_demo_seed0", "--out", out2, "--band", "range"]) == 0
    assert os.path.getsize(out2) > 10000


def test_missing_log_is_an_error(tmp_path, capsys):
    mod = _load()
    assert mod.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no train_log.jsonl" in capsys.readouterr().err
