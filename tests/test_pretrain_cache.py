"""Pre-trained start made on first use (ppise.engine.pretrain_cache), with a stand-in pre-training run."""
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


def _fake_runner(calls):
    """Does what tools/train.py -c pretrain_demo.yaml leaves behind: a latest checkpoint and a log."""
    def run(config, overrides):
        from ppise.engine.hooks.checkpoint import model_dir_of
        from ppise.utils.checkpoint import save_checkpoint

        calls.append((config, list(overrides)))
        cfg = get_config(config, overrides)
        paddle.seed(7)
        model = build_model_from_config(cfg)
        save_checkpoint(model_dir_of(cfg), "latest", model.state_dict())
        with open(os.path.join(cfg["Global"]["output_dir"], "train_log.jsonl"), "w") as f:
            f.write(json.dumps({"epoch": 6, "mAP": 0.5, "loss": 1.0}) + "\n")
    return run


def _demo_cfg(tmp_path, pretrained):
    cfg = get_config(os.path.join(ROOT, "configs", "ise_demo.yaml"), [f"Global.output_dir={tmp_path}/ise"])
    cache = str(tmp_path / "pre" / "backbone.pdparams")
    cfg["Global"]["pretrained_model"] = cache if pretrained == "cache" else pretrained
    cfg["Global"]["pretrained_from"] = {"config": "configs/pretrain_demo.yaml", "cache": cache}
    return cfg, cache


def test_made_once_then_reused_and_loaded_by_the_ise_run(tmp_path):
    calls = []
    cfg, cache = _demo_cfg(tmp_path, "cache")
    assert ensure_pretrained(cfg, runner=_fake_runner(calls)) == cache
    assert len(calls) == 1 and calls[0][0] == PRETRAIN
    assert f"Global.output_dir={tmp_path}/pre/run" in calls[0][1]
    state = paddle.load(cache)
    assert state and all(k.startswith(("backbone.", "neck.")) for k in state)  # no source classifier
    info = json.load(open(cache + ".json"))
    assert info["final"]["mAP"] == 0.5 and info["tensors"] == len(state)
    assert ensure_pretrained(cfg, runner=_fake_runner(calls)) == cache and len(calls) == 1  # cached

    model = build_model_from_config(cfg)  # strict load of backbone + neck into the ISE demo model
    own = model.state_dict()
    for k, v in state.items():
        np.testing.assert_array_equal(own[k].numpy(), v.numpy())


def test_off_or_elsewhere_never_trains(tmp_path):
    calls = []
    cfg, _ = _demo_cfg(tmp_path, None)
    assert ensure_pretrained(cfg, runner=_fake_runner(calls)) is None
    other = str(tmp_path / "mine.pdparams")
    cfg, _ = _demo_cfg(tmp_path, other)
    assert ensure_pretrained(cfg, runner=_fake_runner(calls)) == other and not calls


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
