"""Pre-trained start made on first use (ppise.engine.pretrain_cache): a real tiny supervised run, its
backbone loaded by an ISE run; switched off or pointed elsewhere it never trains; clear failures."""
from __future__ import annotations

import json
import os

import numpy as np
import paddle
import pytest

from ppise.config import get_config
from ppise.engine.builder import build_model_from_config
from ppise.engine.pretrain_cache import ensure_pretrained
from ppise.errors import ConfigError, TrainingError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PRETRAIN = os.path.join(ROOT, "configs", "pretrain_demo.yaml")


def _never_runs(calls):
    def run(config, overrides):
        calls.append((config, list(overrides)))
        raise AssertionError("no pre-training expected")
    return run


def _demo_cfg(tmp_path, pretrained):
    cfg = get_config(os.path.join(ROOT, "configs", "ise_demo.yaml"), [f"Global.output_dir={tmp_path}/ise"])
    cache = str(tmp_path / "pre" / "backbone.pdparams")
    cfg["Global"]["pretrained_model"] = cache if pretrained == "cache" else pretrained
    cfg["Global"]["pretrained_from"] = {"config": "configs/pretrain_demo.yaml", "cache": cache}
    return cfg, cache


_TINY_ARCH = {"Backbone": {"name": "ResNetMini", "pretrained": False, "stem_channels": 8, "widths": [8, 16, 16, 32],
                           "out_channels": 32},
              "Neck": {"name": "BNNeck", "num_features": 32}}


def _loaders(data):
    section = {"dataset": {"image_root": data}, "loader": {"num_workers": 0}}
    return {"Train": section, "Eval": {"Query": section, "Gallery": section}}


def _write_yaml(path, data):
    import yaml

    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_real_supervised_run_then_its_backbone_starts_an_ise_run(tmp_path):
    """tools/train.py on an ISE config whose pre-trained start is missing: it runs the (tiny, real)
    supervised pre-training once, caches backbone + neck, and the ISE run starts from them."""
    from tiny import make_data, read_log, run_tool, ok

    data = make_data(str(tmp_path / "data"), ids=24, seed=5)  # 12 training identities
    cache = tmp_path / "pre" / "backbone.pdparams"
    sup = _write_yaml(tmp_path / "sup.yaml", {
        "_BASE_": PRETRAIN,
        "Global": {"synthetic_dataset": None, "epochs": 1, "eval_during_train": False, "print_batch_step": 1},
        "Arch": dict(_TINY_ARCH, Head={"name": "FC", "embedding_size": 32, "class_num": 12, "bias_attr": False}),
        "DataLoader": dict(_loaders(data), Train=dict(_loaders(data)["Train"], sampler={
            "name": "PKSampler", "batch_size": 16, "sample_per_id": 4, "iters_per_epoch": 2})),
    })
    ise = _write_yaml(tmp_path / "ise.yaml", {
        "_BASE_": os.path.join(ROOT, "configs", "ise_demo.yaml"),
        "Global": {"synthetic_dataset": None, "epochs": 1, "eval_during_train": False, "output_dir": str(tmp_path / "ise"),
                   "pretrained_model": str(cache), "pretrained_from": {"config": sup, "cache": str(cache)}},
        "Arch": _TINY_ARCH,
        "Loss": {"Train": [{"ClusterMemoryLoss": {"num_features": 32}}, {"ISESupport": {"topk": 1}},
                           {"LabelPreservingLoss": {"weight": 0.1}}]},
        "Cluster": {"k1": 10, "eps": 0.6, "min_samples": 3},
        "DataLoader": dict(_loaders(data), Train=dict(_loaders(data)["Train"], sampler={
            "name": "RandomMultipleGallerySampler", "batch_size": 16, "num_instances": 4, "iters_per_epoch": 2})),
    })
    proc = ok(run_tool("tools/train.py", [], config=ise))
    text = proc.stdout + proc.stderr
    assert "does not exist yet: making it once by supervised pre-training" in text
    assert "pre-trained weights ready" in text
    run_dir = tmp_path / "pre" / "run"
    sup_state = paddle.load(str(run_dir / "RecModel" / "latest.pdparams"))
    assert any(k.startswith("head.") for k in sup_state)  # the supervised checkpoint holds its classifier
    last = read_log(str(run_dir))[-1]
    assert last["epoch"] == 1 and np.isfinite(last["loss"]) and "ari" not in last  # trained on true labels, no clustering
    state = paddle.load(str(cache))
    assert state and all(k.startswith(("backbone.", "neck.")) for k in state)  # no source classifier
    for k, v in state.items():
        np.testing.assert_array_equal(v.numpy(), sup_state[k].numpy())
    info = json.load(open(str(cache) + ".json"))
    assert info["tensors"] == len(state) and info["config"] == sup
    assert read_log(str(tmp_path / "ise"))[-1]["epoch"] == 1 and "ari" in read_log(str(tmp_path / "ise"))[-1]

    cfg = get_config(ise)  # cached now: nothing runs; the ISE model loads it strictly
    assert ensure_pretrained(cfg, runner=_never_runs([])) == str(cache)
    own = build_model_from_config(cfg).state_dict()
    for k, v in state.items():
        np.testing.assert_array_equal(own[k].numpy(), v.numpy())


def test_off_or_elsewhere_never_trains(tmp_path):
    calls = []
    cfg, _ = _demo_cfg(tmp_path, None)
    assert ensure_pretrained(cfg, runner=_never_runs(calls)) is None
    other = str(tmp_path / "mine.pdparams")
    cfg, _ = _demo_cfg(tmp_path, other)
    assert ensure_pretrained(cfg, runner=_never_runs(calls)) == other and not calls


def test_failures_are_clear(tmp_path):
    cfg, cache = _demo_cfg(tmp_path, "cache")

    def broken(config, overrides):
        raise TrainingError("boom")

    with pytest.raises(TrainingError, match="boom"):
        ensure_pretrained(cfg, runner=broken)
    assert not os.path.exists(cache)
    cfg["Global"]["pretrained_from"] = {"config": "configs/nope.yaml", "cache": cache}
    with pytest.raises(ConfigError, match="not found"):
        ensure_pretrained(cfg)
    cfg["Global"]["pretrained_from"] = {"config": "configs/pretrain_demo.yaml", "cache": cache, "when": 1}
    with pytest.raises(ConfigError, match="unknown key"):
        ensure_pretrained(cfg)
