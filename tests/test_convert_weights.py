"""tools/convert_weights.py: torchvision / PaddleClas ResNet-50 -> ResNet50_last_stage_stride1 .pdparams."""

import numpy as np
import paddle
import pytest

from ppise.arch.rec_model import build_backbone
from ppise.errors import ConfigError
from ppise.utils.weights import convert_resnet50, convert_resnet50_file, read_state_dict

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def torchvision_resnet50(seed=0):
    """Random tensors with torchvision's resnet50() names and shapes (written out by hand)."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, o, i, k):
        sd[name + ".weight"] = (rng.normal(size=(o, i, k, k)) * np.sqrt(2.0 / (i * k * k))).astype(np.float32)

    def bn(name, c):
        sd[name + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[name + ".bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        sd[name + ".running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        sd[name + ".running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[name + ".num_batches_tracked"] = np.array(100, dtype=np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for s, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"layer{s}.{b}"
            conv(p + ".conv1", width, cin, 1), bn(p + ".bn1", width)
            conv(p + ".conv2", width, width, 3), bn(p + ".bn2", width)
            conv(p + ".conv3", width * 4, width, 1), bn(p + ".bn3", width * 4)
            if b == 0:
                conv(p + ".downsample.0", width * 4, cin, 1), bn(p + ".downsample.1", width * 4)
            cin = width * 4
    sd["fc.weight"] = rng.normal(size=(1000, 2048)).astype(np.float32) * 0.01
    sd["fc.bias"] = np.zeros(1000, np.float32)
    return sd


# ---- numpy reference of the first layers, straight from the torchvision tensors
def np_conv(x, w, stride=1, pad=0):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    o, i, k, _ = w.shape
    h = (x.shape[2] - k) // stride + 1
    wd = (x.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], o, h, wd))
    for dy in range(k):
        for dx in range(k):
            patch = x[:, :, dy:dy + stride * h:stride, dx:dx + stride * wd:stride]
            out += np.einsum("nihw,oi->nohw", patch, w[:, :, dy, dx])
    return out


def np_bn(x, sd, name):
    g, b, m, v = (sd[f"{name}.{k}"][None, :, None, None] for k in ("weight", "bias", "running_mean", "running_var"))
    return (x - m) / np.sqrt(v + 1e-5) * g + b


def np_maxpool(x):
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    return np.max([x[:, :, dy:dy + 2 * h:2, dx:dx + 2 * w:2] for dy in range(3) for dx in range(3)], axis=0)


def np_first_block(x, sd):
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    y = np_maxpool(relu(np_bn(np_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1")))
    p = "layer1.0"
    z = relu(np_bn(np_conv(y, sd[p + ".conv1.weight"]), sd, p + ".bn1"))
    z = relu(np_bn(np_conv(z, sd[p + ".conv2.weight"], 1, 1), sd, p + ".bn2"))
    z = np_bn(np_conv(z, sd[p + ".conv3.weight"]), sd, p + ".bn3")
    short = np_bn(np_conv(y, sd[p + ".downsample.0.weight"]), sd, p + ".downsample.1")
    return relu(z + short)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("weights")
    sd = torchvision_resnet50()
    src = str(tmp / "resnet50_tv.safetensors")
    safetensors_numpy.save_file(sd, src)
    info = convert_resnet50_file(src, str(tmp / "resnet50_tv.pdparams"))
    return sd, info, tmp


def test_torchvision_safetensors_converts_loads_and_computes_the_same(converted):
    sd, info, _ = converted
    assert info["layout"] == "torchvision" and info["tensors"] == 265 and info["dst"].endswith(".pdparams")
    backbone = build_backbone({"name": "ResNet50_last_stage_stride1", "pretrained": info["dst"]})
    state = backbone.state_dict()
    np.testing.assert_array_equal(state["stem.0.conv.weight"].numpy(), sd["conv1.weight"])
    np.testing.assert_array_equal(state["blocks.13.conv1.bn._variance"].numpy(), sd["layer4.0.bn2.running_var"])
    np.testing.assert_array_equal(state["blocks.3.short.conv.weight"].numpy(), sd["layer2.0.downsample.0.weight"])
    np.testing.assert_array_equal(state["blocks.15.conv2.bn._mean"].numpy(), sd["layer4.2.bn3.running_mean"])
    backbone.eval()
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 16)).astype(np.float32)
    with paddle.no_grad():
        y = backbone.max_pool(backbone.stem(paddle.to_tensor(x)))
        y = backbone.blocks[0](y).numpy()
    np.testing.assert_allclose(y, np_first_block(x.astype(np.float64), sd), rtol=1e-4, atol=1e-4)


def test_paddleclas_layout_is_accepted(converted):
    _, info, tmp = converted
    state = {k: v.numpy() for k, v in paddle.load(info["dst"]).items()}
    state["fc.weight"], state["fc.bias"] = np.zeros((2048, 1000), np.float32), np.zeros(1000, np.float32)
    src = str(tmp / "ResNet50_pretrained.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, src)
    again = convert_resnet50_file(src, str(tmp / "again"))
    assert again["layout"] == "paddleclas" and again["dst"].endswith("again.pdparams")
    back = paddle.load(again["dst"])
    assert sorted(back) == sorted(k for k in state if not k.startswith("fc."))
    np.testing.assert_array_equal(back["blocks.7.conv1.conv.weight"].numpy(), state["blocks.7.conv1.conv.weight"])


def test_strict_messages():
    sd = torchvision_resnet50()
    with pytest.raises(ConfigError, match=r"does not have: layer5\.0\.conv1\.weight"):
        convert_resnet50(dict(sd, **{"layer5.0.conv1.weight": sd["conv1.weight"]}))
    with pytest.raises(ConfigError, match=r"does not provide: blocks\.0\.conv0\.bn\._mean"):
        convert_resnet50({k: v for k, v in sd.items() if k != "layer1.0.bn1.running_mean"})
    with pytest.raises(ConfigError, match=r"stem\.0\.conv\.weight \[64, 3, 3, 3\] vs \[64, 3, 7, 7\]"):
        convert_resnet50(dict(sd, **{"conv1.weight": np.zeros((64, 3, 3, 3), np.float32)}))
    with pytest.raises(ConfigError, match="not a ResNet-50 state dict"):
        convert_resnet50({"features.0.weight": np.zeros(3)})


def test_pth_without_torch_says_how(tmp_path):
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed")
    except ImportError:
        pass
    path = tmp_path / "resnet50-19c8e357.pth"
    path.write_bytes(b"\0")
    with pytest.raises(ConfigError, match=r"needs PyTorch.*pip install torch.*safetensors"):
        read_state_dict(str(path))
