"""Supervised re-ID losses (CELoss label smoothing, TripletLossV2 batch-hard mining) by hand."""
from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

from ppise.errors import ConfigError
from ppise.loss import CELoss, TripletLossV2, build_losses
from ppise.loss.supervised import SupervisedObjective, class_labels
from ppise.loss.triplet import batch_hard_distances


def _t(x, dtype="float32"):
    return paddle.to_tensor(np.asarray(x), dtype=dtype)


def test_celoss_label_smoothing_by_hand():
    # logits [0, ln 2, 0]: softmax = [1/4, 1/2, 1/4]; label 1, epsilon 0.3, 3 classes:
    # soft target = (1 - eps) one-hot + eps / C = [0.1, 0.8, 0.1]
    logits = _t([[0.0, math.log(2.0), 0.0]])
    labels = _t([1], "int64")
    expect = -(0.1 * math.log(0.25) + 0.8 * math.log(0.5) + 0.1 * math.log(0.25))
    got = float(CELoss(epsilon=0.3)(logits, labels))
    assert got == pytest.approx(expect, rel=1e-6)
    assert float(CELoss()(logits, labels)) == pytest.approx(-math.log(0.5), rel=1e-6)


def test_triplet_picks_hardest_positive_and_negative():
    # 1-D features: id 0 at {0, 1, 3}, id 1 at {4, 10}
    x = _t([[0.0], [1.0], [3.0], [4.0], [10.0]])
    y = _t([0, 0, 0, 1, 1], "int64")
    ap, an = batch_hard_distances(x, y)
    np.testing.assert_allclose(ap.numpy(), [3, 2, 3, 6, 6], atol=1e-5)   # farthest same id
    np.testing.assert_allclose(an.numpy(), [4, 3, 1, 1, 7], atol=1e-5)   # nearest other id
    loss = TripletLossV2(margin=0.3, normalize_feature=False, feature_from="features")({"features": x}, y)
    hinge = np.maximum(0.0, np.array([3, 2, 3, 6, 6]) - np.array([4, 3, 1, 1, 7]) + 0.3)
    assert float(loss) == pytest.approx(hinge.mean(), rel=1e-5)


def test_triplet_normalize_feature_uses_unit_vectors():
    # after L2 normalisation [2, 0] and [1, 0] coincide; [0, 3] is at distance sqrt(2)
    x = _t([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    y = _t([0, 0, 1, 1], "int64")
    loss = TripletLossV2(margin=0.5, normalize_feature=True)(x, y)
    # every anchor: d(a, p) ~ 0, d(a, n) = sqrt(2) -> hinge 0
    assert float(loss) == pytest.approx(0.0, abs=1e-4)
    loss_raw = TripletLossV2(margin=0.5, normalize_feature=False)(x, y)
    # without normalisation the raw distances decide (numpy reference)
    xn = x.numpy()
    d = np.sqrt(((xn[:, None] - xn[None]) ** 2).sum(-1))
    same = np.array([0, 0, 1, 1])[:, None] == np.array([0, 0, 1, 1])[None]
    ap = np.where(same, d, 0).max(1)
    an = np.where(same, np.inf, d).min(1)
    assert float(loss_raw) == pytest.approx(np.maximum(0, ap - an + 0.5).mean(), rel=1e-5)


def test_triplet_gradient_flows_and_keys():
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(8, 4)).astype("float32"), stop_gradient=False)
    y = _t([0, 0, 1, 1, 2, 2, 3, 3], "int64")
    TripletLossV2(margin=0.3, feature_from="features")({"features": x}, y).backward()
    assert x.grad is not None and float(paddle.abs(x.grad).sum()) > 0
    assert TripletLossV2(feat_from="features").feature_from == "features"
    assert TripletLossV2().feature_from == "backbone" and TripletLossV2().margin == 0.5  # PaddleClas defaults
    with pytest.raises(KeyError, match="backbone"):
        TripletLossV2()({"features": x}, y)
    with pytest.raises(ConfigError):
        TripletLossV2(margin=-1)
    with pytest.raises(ConfigError):
        TripletLossV2(feature_from="neck")
    with pytest.raises(ValueError, match="single identity"):
        TripletLossV2()(x, paddle.zeros([8], dtype="int64"))


def test_supervised_objective_weights_and_contract():
    cfg = [{"CELoss": {"weight": 0.5, "epsilon": 0.1}},
           {"TripletLossV2": {"weight": 2.0, "margin": 0.3, "normalize_feature": False, "feature_from": "features"}}]
    obj = SupervisedObjective.from_config(cfg)
    assert obj.needs_clusters is False
    rng = np.random.default_rng(1)
    feats = _t(rng.normal(size=(6, 5)))
    logits = _t(rng.normal(size=(6, 3)))
    labels = _t([0, 0, 1, 1, 2, 2], "int64")
    out = obj.losses({"features": feats, "logits": logits}, labels, 0.3)
    assert sorted(out) == ["loss_ce", "loss_triplet"]
    ce = float(CELoss(epsilon=0.1)(logits, labels))
    tri = float(TripletLossV2(margin=0.3, normalize_feature=False)(feats, labels))
    assert float(out["loss_ce"]) == pytest.approx(0.5 * ce, rel=1e-6)
    assert float(out["loss_triplet"]) == pytest.approx(2.0 * tri, rel=1e-6)
    obj.reset(None)
    obj.update()
    obj.set_state_dict(obj.state_dict())
    with pytest.raises(ConfigError, match="classifier head"):
        obj.losses({"features": feats}, labels, 0.0)
    with pytest.raises(ConfigError, match="class_num"):
        obj.losses({"features": feats, "logits": logits}, _t([0, 0, 1, 1, 5, 5], "int64"), 0.0)


def test_supervised_objective_rejects_cluster_losses():
    with pytest.raises(ConfigError, match="not a supervised loss"):
        SupervisedObjective(build_losses([{"ClusterMemoryLoss": {"num_features": 8}}]))
    with pytest.raises(ConfigError):
        SupervisedObjective({})


def test_class_labels_are_contiguous_and_checked():
    np.testing.assert_array_equal(class_labels(np.array([1007, 1001, 1007, 1100]), 3), [1, 0, 1, 2])
    with pytest.raises(ConfigError, match="class_num=4 but the training set has 3"):
        class_labels(np.array([1007, 1001, 1007, 1100]), 4)
    with pytest.raises(ConfigError, match="negative"):
        class_labels(np.array([-1, 2]))


def test_pk_sampler_runs_iters_per_epoch_batches_when_given():
    """The trainer's steps per epoch (lr schedule, ISE's t/T) come from iters_per_epoch, for PKSampler too."""
    from ppise.data.samplers import PKSampler

    labels = np.repeat(np.arange(10), 6)
    assert len(list(PKSampler(labels, None, batch_size=16, sample_per_id=4))) == 60 // 16  # PaddleClas's length
    batches = list(PKSampler(labels, None, batch_size=16, sample_per_id=4, iters_per_epoch=7))
    assert len(batches) == 7 and all(len(b) == 16 and len(set(labels[b])) == 4 for b in batches)
    with pytest.raises(ConfigError, match="iters_per_epoch"):
        PKSampler(labels, None, batch_size=16, sample_per_id=4, iters_per_epoch=0)


@pytest.mark.parametrize("name", ["pretrain_demo.yaml", "supervised_market.yaml"])
def test_shipped_supervised_configs_build_the_supervised_objective(name):
    import os

    from ppise.config import check_components, get_config
    from ppise.loss import build_objective
    from ppise.registry import OBJECTIVES

    assert "SupervisedObjective" in OBJECTIVES and set(OBJECTIVES.get("SupervisedObjective").components) >= {"CELoss", "TripletLossV2"}
    cfg = get_config(os.path.join(os.path.dirname(__file__), "..", "configs", name))
    check_components(cfg, training=True)  # PKSampler's iters_per_epoch included
    objective = build_objective(cfg["Loss"]["Train"])
    assert isinstance(objective, SupervisedObjective) and not objective.needs_clusters
    assert objective.names == ["CELoss", "TripletLossV2"]
