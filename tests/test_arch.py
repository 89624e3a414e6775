"""ppise.arch: PaddleClas parity (keys, shapes, features), zoo fallback, necks, heads, weights."""
from __future__ import annotations

import copy
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
import yaml

from ppise.arch import RecModel, build_model
from ppise.errors import ConfigError
from ppise.registry import HEADS
from ppise.utils.weights import load_pretrained, save_state_dict_atomic

INFER_YAML = "/work/shared/paddleclas/ResNet50_UReID_infer.yaml"
if not os.path.isfile(INFER_YAML):  # CI clones main with shared/ beside it
    INFER_YAML = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "paddleclas", "ResNet50_UReID_infer.yaml")


def mini_arch(**over):
    arch = {
        "name": "RecModel",
        "Backbone": {"name": "ResNetMini", "pretrained": False},
        "BackboneStopLayer": {"name": "avg_pool"},
        "Neck": {"name": "BNNeck", "num_features": 256},
        "Head": {"name": "FC", "embedding_size": 256, "class_num": 10},
    }
    arch.update(over)
    return {k: v for k, v in arch.items() if v is not None}


def _np(t):
    return t.numpy()


# ------------------------------------------------------------------ PaddleClas parity

def test_resnet50_official_config_matches_paddleclas(tmp_path):
    pytest.importorskip("paddleclas")
    import paddleclas.ppcls.arch as ppcls_arch

    with open(INFER_YAML) as f:
        arch = yaml.safe_load(f)["Arch"]
    arch["Backbone"]["pretrained"] = False
    paddle.seed(1)
    ref = ppcls_arch.build_model({"Arch": copy.deepcopy(arch), "Global": {"device": "cpu"}})
    ours = build_model(copy.deepcopy(arch))

    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)  # same names, same order
    assert {k: list(v.shape) for k, v in our_sd.items()} == {k: list(v.shape) for k, v in ref_sd.items()}
    assert "head.fc.weight" in our_sd and "neck.feat_bn._variance" in our_sd and "backbone.fc.weight" not in our_sd

    # the path an official .pdparams takes: file on disk, strict load, no suffix given
    save_state_dict_atomic(ref_sd, str(tmp_path / "ISE_like.pdparams"))
    report = load_pretrained(ours, str(tmp_path / "ISE_like"), strict=True)
    assert report["loaded"] == len(ref_sd) and not report["missing"] and not report["unexpected"]

    ref.eval()
    ours.eval()
    x = paddle.to_tensor(np.random.RandomState(0).randn(1, 3, 256, 128).astype("float32"))
    with paddle.no_grad():
        a, b = ref(x), ours(x)
    assert sorted(a) == sorted(b) == ["backbone", "features", "logits", "neck"]
    assert list(b["backbone"].shape) == [1, 2048, 1, 1] and list(b["features"].shape) == [1, 2048]
    for key in ("backbone", "features", "logits"):
        scale = float(np.abs(_np(a[key])).max())
        np.testing.assert_allclose(_np(b[key]), _np(a[key]), rtol=0, atol=1e-5 * max(scale, 1.0))
    np.testing.assert_array_equal(_np(ours.inference_output(b)), _np(b["features"]))


def test_resnet50_last_stage_keeps_stride_1():
    model = build_model({"Backbone": {"name": "ResNet50_last_stage_stride1"}, "BackboneStopLayer": {"name": "blocks"}})
    model.eval()
    with paddle.no_grad():
        fmap = model(paddle.zeros([1, 3, 64, 32]))["features"]
    assert list(fmap.shape) == [1, 2048, 4, 2]  # /16 not /32
    assert isinstance(model.backbone.avg_pool, nn.Identity) and isinstance(model.backbone.fc, nn.Identity)


def test_paddleclas_zoo_backbone_by_name():
    pytest.importorskip("paddleclas")
    from paddleclas.ppcls.arch.backbone import PPLCNet_x0_25

    arch = {"Backbone": {"name": "PPLCNet_x0_25", "pretrained": False}, "BackboneStopLayer": {"name": "avg_pool"},
            "Neck": {"name": "BNNeck", "num_features": 128}}
    model = build_model(arch)
    ref = PPLCNet_x0_25(pretrained=False)
    ref.stop_after("avg_pool")
    assert [k[len("backbone."):] for k in model.state_dict() if k.startswith("backbone.")] == list(ref.state_dict())
    out = model(paddle.randn([4, 3, 64, 32]))
    assert list(out["backbone"].shape) == [4, 128, 1, 1] and list(out["features"].shape) == [4, 128]
    out["features"].mean().backward()  # trainable end to end


# ------------------------------------------------------------------ small backbone

def test_resnet_mini_shapes_and_stop_layers():
    x = paddle.randn([2, 3, 128, 64])
    model = build_model(mini_arch(Neck=None, Head=None))
    assert 0.8e6 < sum(int(np.prod(p.shape)) for p in model.parameters()) < 2e6
    assert list(model(x)["features"].shape) == [2, 256, 1, 1]
    fmap = build_model(mini_arch(BackboneStopLayer={"name": "stages"}, Neck=None, Head=None))(x)["features"]
    assert list(fmap.shape) == [2, 256, 8, 4]
    cfg = mini_arch(Neck=None, Head=None, BackboneStopLayer=None)
    cfg["Backbone"].update(last_stride=2, out_channels=512)
    assert list(build_model(cfg)(x)["features"].shape) == [2, 512]  # no stop layer: flattened


def test_bad_stop_layer_lists_sub_layers():
    with pytest.raises(ConfigError, match=r"Arch\.BackboneStopLayer\.name.*'stem', 'max_pool', 'stages'"):
        build_model(mini_arch(BackboneStopLayer={"name": "layer4"}))


# ------------------------------------------------------------------ necks and heads

def test_bnneck_semantics_and_keys():
    model = build_model(mini_arch(Head=None))
    keys = [k for k in model.state_dict() if k.startswith("neck.")]
    assert keys == ["neck.feat_bn.weight", "neck.feat_bn.bias", "neck.feat_bn._mean", "neck.feat_bn._variance"]
    assert not model.neck.feat_bn.bias.stop_gradient  # PaddleClas 2.6: bias trainable by default
    model.train()
    feats = _np(model(paddle.randn([16, 3, 64, 32]))["features"])
    np.testing.assert_allclose(feats.mean(0), 0.0, atol=1e-4)
    frozen = build_model(mini_arch(Head=None, Neck={"name": "BNNeck", "num_features": 256,
                                                    "bias_attr": {"trainable": False}}))
    assert frozen.neck.feat_bn.bias.stop_gradient


def test_gem_p1_is_average_and_large_p_approaches_max():
    from ppise.arch.neck import GeM

    x = paddle.to_tensor(np.random.RandomState(0).uniform(0.05, 1.0, (3, 8, 8, 4)).astype("float32"))
    avg = _np(F.adaptive_avg_pool2d(x, 1).flatten(1))
    np.testing.assert_allclose(_np(GeM(p=1.0, learnable=False)(x)), avg, rtol=1e-5)
    mx = _np(x.amax(axis=[2, 3]))
    big = _np(GeM(p=64.0)(x))
    lower = mx * (1.0 / 32) ** (1.0 / 64)  # mean of x^p >= max^p / (H*W)
    assert np.all(big <= mx + 1e-5) and np.all(big >= lower - 1e-5)
    assert np.all(np.abs(big - mx) < np.abs(avg - mx))
    gem = GeM(p=3.0, learnable=True, num_features=8)
    gem(x).sum().backward()
    assert gem.p.grad is not None and not gem.p.stop_gradient
    assert GeM(p=3.0, learnable=False).p.stop_gradient
    with pytest.raises(ValueError, match="BackboneStopLayer"):
        GeM()(paddle.ones([2, 8]))


def test_gem_neck_in_model():
    model = build_model(mini_arch(BackboneStopLayer={"name": "stages"}, Head=None,
                                  Neck={"name": "GeM", "p": 3.0, "num_features": 256}))
    assert "neck.p" in model.state_dict()
    assert list(model(paddle.randn([2, 3, 64, 32]))["features"].shape) == [2, 256]


def test_fc_head_logits_and_softmax_output():
    model = build_model(mini_arch(infer_output_key="logits", infer_add_softmax=True))
    sd = model.state_dict()
    assert list(sd["head.fc.weight"].shape) == [256, 10] and list(sd["head.fc.bias"].shape) == [10]
    out = model(paddle.randn([3, 3, 64, 32]), paddle.to_tensor([[1], [2], [3]]))
    assert list(out["logits"].shape) == [3, 10]
    np.testing.assert_allclose(_np(model.inference_output(out)).sum(1), 1.0, rtol=1e-5)
    emb = build_model(mini_arch(Neck={"name": "FC", "embedding_size": 256, "class_num": 64}, Head=None))
    assert list(emb(paddle.randn([2, 3, 64, 32]))["features"].shape) == [2, 64]


def test_model_without_head_gives_features_only():
    model = build_model(mini_arch(Head=None))
    out = model(paddle.randn([2, 3, 64, 32]))
    assert "logits" not in out and list(out["features"].shape) == [2, 256]
    with pytest.raises(ConfigError, match="infer_output_key"):
        build_model(mini_arch(Head=None, infer_output_key="logits"))


# ------------------------------------------------------------------ config errors

def test_unknown_names_list_registered_ones():
    with pytest.raises(ConfigError) as err:
        build_model(mini_arch(Backbone={"name": "ResNetMni"}))
    msg = str(err.value)
    for part in ("Arch.Backbone.name", "ResNet50_last_stage_stride1", "ResNetMini", "PaddleClas", "Did you mean"):
        assert part in msg
    with pytest.raises(ConfigError, match=r"Arch\.Neck\.name.*BNNeck.*GeM"):
        build_model(mini_arch(Neck={"name": "Nope"}))
    with pytest.raises(ConfigError, match=r"Arch\.Head\.name.*FC"):
        build_model(mini_arch(Head={"name": "Nope"}))
    with pytest.raises(ConfigError, match="RecModel"):
        build_model(mini_arch(name="DistillationModel"))


def test_wrong_kwargs_name_the_config_path():
    with pytest.raises(ConfigError, match=r"Arch\.Neck.*num_feature"):
        build_model(mini_arch(Neck={"name": "BNNeck", "num_feature": 256}))
    with pytest.raises(ConfigError, match=r"Arch\.Backbone.*widthz"):
        build_model(mini_arch(Backbone={"name": "ResNetMini", "widthz": [8, 8, 8, 8]}))
    with pytest.raises(ConfigError, match=r"Arch\.Backbone.*widths and depths"):
        build_model(mini_arch(Backbone={"name": "ResNetMini", "widths": [8, 8]}))


# ------------------------------------------------------------------ weights

def test_pretrained_true_fails_fast_with_local_file_advice():
    with pytest.raises(ConfigError) as err:
        build_model(mini_arch(Backbone={"name": "ResNetMini", "pretrained": True}))
    msg = str(err.value)
    assert "cannot be downloaded" in msg and "Arch.Backbone.pretrained:" in msg and "Global.pretrained_model" in msg
    # tools that load full weights afterwards may keep the official config's `pretrained: True`
    assert isinstance(build_model(mini_arch(Backbone={"name": "ResNetMini", "pretrained": True}),
                                  skip_backbone_pretrained=True), RecModel)


def test_backbone_pretrained_from_local_file(tmp_path):
    src = build_model(mini_arch())
    save_state_dict_atomic(src.backbone.state_dict(), str(tmp_path / "mini.pdparams"))
    save_state_dict_atomic(src.state_dict(), str(tmp_path / "full.pdparams"))
    assert sorted(os.listdir(tmp_path)) == ["full.pdparams", "mini.pdparams"]  # no .tmp left
    w = _np(src.backbone.stem[0].weight)
    for path in (tmp_path / "mini", tmp_path / "full.pdparams"):  # suffix optional; RecModel file accepted
        got = build_model(mini_arch(Backbone={"name": "ResNetMini", "pretrained": str(path)}))
        np.testing.assert_array_equal(_np(got.backbone.stem[0].weight), w)
    with pytest.raises(ConfigError, match=r"nowhere\.pdparams.*Arch\.Backbone\.pretrained"):
        build_model(mini_arch(Backbone={"name": "ResNetMini", "pretrained": str(tmp_path / "nowhere")}))


def test_load_pretrained_strict_reports_every_mismatch(tmp_path):
    src = build_model(mini_arch())
    path = str(tmp_path / "ckpt.pdparams")
    save_state_dict_atomic(src.state_dict(), path)
    other = build_model(mini_arch(Neck=None, Head={"name": "FC", "embedding_size": 256, "class_num": 20},
                                  BackboneStopLayer={"name": "flatten"}))
    with pytest.raises(ConfigError) as err:
        load_pretrained(other, path)
    msg = str(err.value)
    assert "Global.pretrained_model" in msg and "ckpt.pdparams" in msg
    assert "unexpected key(s)" in msg and "neck.feat_bn.weight" in msg
    assert "shape mismatch" in msg and "head.fc.weight [256, 10] vs [256, 20]" in msg
    bigger = build_model(mini_arch(Neck={"name": "GeM", "num_features": 256}, BackboneStopLayer={"name": "stages"}))
    with pytest.raises(ConfigError, match=r"missing key\(s\).*neck\.p"):
        load_pretrained(bigger, path)
    report = load_pretrained(other, path, strict=False, skip_prefixes=("head.",))
    assert report["unexpected"][:1] == ["neck.feat_bn.weight"] and report["loaded"] == len(other.backbone.state_dict())
    np.testing.assert_array_equal(_np(other.backbone.stem[0].weight), _np(src.backbone.stem[0].weight))
    with pytest.raises(ConfigError, match=r"missing\.pdparams.*Global\.pretrained_model"):
        load_pretrained(other, str(tmp_path / "missing"))
