"""The cluster-contrast objective: same numbers as memory + supports + LP computed by hand,
assembled from Loss.Train (new form) or from old configs (Arch.Head: ISEHead), and refusals."""
from __future__ import annotations

import copy
import os

import numpy as np
import paddle
import pytest
import yaml

from ppise.config import get_config, load_yaml
from ppise.errors import ConfigError
from ppise.loss import (ClusterContrastObjective, ClusterMemoryLoss, ISESupport, LabelPreservingLoss,
                        build_objective)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = [os.path.join(ROOT, "configs", name) for name in ("ise_demo.yaml", "cc_demo.yaml")]


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _setup(seed=0, clusters=6, dim=8):
    rng = np.random.default_rng(seed)
    cents = unit(rng.normal(size=(clusters, dim))).astype(np.float32)
    feats = rng.normal(size=(12, dim)).astype(np.float32)
    labels = paddle.to_tensor(np.repeat([0, 2, 5], 4).astype(np.int64))
    return cents, feats, labels


def _memory(cents, **kw):
    kw = {"momentum": 0.2, "update": "hard", **kw}
    m = ClusterMemoryLoss(num_features=cents.shape[1], **kw)
    m.reset(cents)
    return m


@pytest.mark.parametrize("update", ["hard", "mean"])
def test_ise_objective_equals_the_hand_assembled_step(update):
    cents, feats, labels = _setup()
    # by hand, as the trainer did before the objective existed
    mem_ref = _memory(cents, update=update, weight=0.7)
    f_ref = paddle.to_tensor(feats, stop_gradient=False)
    s, ys, alpha = ISESupport(topk=2)(f_ref, labels, mem_ref.memory, 0.3)
    x, y = paddle.concat([f_ref, s]), paddle.concat([labels, ys])
    ref_cc = mem_ref(x, y) * 0.7
    ref_lp = LabelPreservingLoss(weight=0.1)(f_ref, s, labels, ys) * 0.1
    (ref_cc + ref_lp).backward()
    mem_ref.update(x.detach(), y)

    obj = ClusterContrastObjective(_memory(cents, update=update, weight=0.7), ISESupport(topk=2), LabelPreservingLoss(weight=0.1))
    f = paddle.to_tensor(feats, stop_gradient=False)
    losses = obj.losses({"features": f}, labels, 0.3)
    assert set(losses) == {"loss_cc", "loss_lp"} and obj.metrics["alpha"] == pytest.approx(alpha)
    assert float(losses["loss_cc"]) == pytest.approx(float(ref_cc), rel=1e-6)
    assert float(losses["loss_lp"]) == pytest.approx(float(ref_lp), rel=1e-6)
    paddle.add_n(list(losses.values())).backward()
    np.testing.assert_allclose(f.grad.numpy(), f_ref.grad.numpy(), rtol=1e-5, atol=1e-7)
    obj.update()
    np.testing.assert_allclose(obj.state_dict()["memory"], mem_ref.memory_state(), atol=1e-6)
    obj.update()  # no second update without a new step
    np.testing.assert_allclose(obj.state_dict()["memory"], mem_ref.memory_state(), atol=1e-6)


def test_plain_cluster_contrast_updates_with_instances_only():
    cents, feats, labels = _setup(1)
    ref = _memory(cents)
    expected = float(ref(paddle.to_tensor(feats), labels))
    ref.update(paddle.to_tensor(feats), labels)
    obj = ClusterContrastObjective(_memory(cents))
    losses = obj.losses({"features": paddle.to_tensor(feats)}, labels, 0.5)
    assert list(losses) == ["loss_cc"] and float(losses["loss_cc"]) == pytest.approx(expected, rel=1e-6)
    obj.update()
    np.testing.assert_array_equal(obj.state_dict()["memory"], ref.memory_state())
    other = ClusterContrastObjective(ClusterMemoryLoss(num_features=8))
    other.set_state_dict(obj.state_dict())
    np.testing.assert_array_equal(other.state_dict()["memory"], ref.memory_state())


def test_lp_without_supports_and_foreign_losses_are_refused():
    with pytest.raises(ConfigError, match="LabelPreservingLoss needs ISESupport"):
        build_objective([{"ClusterMemoryLoss": {"num_features": 8}}, {"LabelPreservingLoss": {}}])
    with pytest.raises(ConfigError, match=r"Loss.Train\[1\].CELoss cannot be part of a cluster-contrast objective"):
        build_objective([{"ClusterMemoryLoss": {"num_features": 8}}, {"CELoss": {"weight": 1.0}}])
    with pytest.raises(ConfigError, match=r"Loss.Train\[1\].SupConLoss"):
        build_objective([{"ClusterMemoryLoss": {"num_features": 8}}, {"SupConLoss": {}}])
    with pytest.raises(ConfigError, match=r"Loss.Train\[1\].ISESupport.topk: unknown|Loss.Train\[1\].ISESupport.tpok"):
        build_objective([{"ClusterMemoryLoss": {"num_features": 8}}, {"ISESupport": {"tpok": 1}}])


def _old_form(cfg_path, tmp_path):
    """The demo config (new Loss form) written the pre-objective way: supports as Arch.Head ISEHead,
    ClusterMemoryLoss.use_support True with supports, False without (as the demos used to be)."""
    old = copy.deepcopy(load_yaml(cfg_path))  # _BASE_ resolved: the copy stands alone
    train = old["Loss"]["Train"]
    names = [next(iter(e)) for e in train]
    support = train.pop(names.index("ISESupport"))["ISESupport"] if "ISESupport" in names else None
    if support is not None:
        old["Arch"]["Head"] = {"name": "ISEHead", **support}
    else:
        old["Arch"]["Head"] = None
    train[0]["ClusterMemoryLoss"]["use_support"] = support is not None
    path = tmp_path / ("old_" + os.path.basename(cfg_path))
    path.write_text(yaml.safe_dump(old))
    return str(path)


@pytest.mark.parametrize("cfg_path", DEMOS)
def test_old_and_new_loss_forms_give_the_same_objective(cfg_path, tmp_path):
    old_warnings, new_warnings = [], []
    old = get_config(_old_form(cfg_path, tmp_path), warn=old_warnings.append)
    new = get_config(cfg_path, warn=new_warnings.append)  # the shipped demos use the new form
    assert old["Loss"] == new["Loss"] and not old["Arch"].get("Head") and "Head" not in new["Arch"]
    assert len(old_warnings) == 1 and new_warnings == []
    if "ise" in os.path.basename(cfg_path):
        assert "Arch.Head: ISEHead moved to Loss.Train[1]: - ISESupport" in old_warnings[0]
        assert [next(iter(e)) for e in new["Loss"]["Train"]] == ["ClusterMemoryLoss", "ISESupport", "LabelPreservingLoss"]
    else:
        assert "use_support is gone" in old_warnings[0]
    objective = build_objective(new["Loss"]["Train"])
    assert objective.needs_clusters and (objective.support is not None) == ("ise" in os.path.basename(cfg_path))


def test_use_support_false_with_supports_is_an_error(tmp_path):
    data = {"Arch": {"name": "RecModel", "Backbone": {"name": "ResNetMini"}, "Head": {"name": "ISEHead", "topk": 1}},
            "Loss": {"Train": [{"ClusterMemoryLoss": {"use_support": False}}]}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"use_support=False is no longer supported.*always join"):
        get_config(str(path))
    data["Arch"]["Head"] = None
    data["Loss"]["Train"].append({"ISESupport": {}})
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="use_support=False"):
        get_config(str(path))


def test_a_cluster_run_listing_celoss_stops_before_any_data():
    from ppise.config import check_components

    cfg = get_config(DEMOS[0], warn=lambda m: None)
    cfg["Loss"]["Train"][2] = {"CELoss": {"weight": 1.0}}  # in place of LabelPreservingLoss
    check_components(cfg)  # a valid loss on its own (PaddleClas configs list it) ...
    with pytest.raises(ConfigError, match=r"Loss.Train\[2\].CELoss cannot be part of a cluster-contrast objective"):
        check_components(cfg, training=True)  # ... but not in a run without labels
