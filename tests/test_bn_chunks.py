"""``Arch.bn_batch_size``: BN over chunks (the official nn.DataParallel statistics)."""
import copy

import numpy as np
import paddle
import pytest

from ppise.arch.rec_model import build_model
from ppise.errors import ConfigError

ARCH = {"name": "RecModel",
        "Backbone": {"name": "ResNetMini", "stem_channels": 8, "widths": [8, 8, 16, 16]},
        "BackboneStopLayer": {"name": "avg_pool"},
        "Neck": {"name": "BNNeck", "num_features": 16}}


def _stats(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items() if k.endswith(("_mean", "_variance"))}


def test_chunked_forward_equals_separate_forwards_of_the_chunks():
    paddle.seed(3)
    chunked = build_model(dict(ARCH, bn_batch_size=4))
    separate = build_model(ARCH)
    separate.set_state_dict(chunked.state_dict())
    first_only = copy.deepcopy(separate)
    before = _stats(chunked)
    x = paddle.randn([10, 3, 32, 16])  # chunks of 4, 4, 2
    chunked.train(), separate.train(), first_only.train()
    out = chunked(x)
    parts = [separate(x[a:b]) for a, b in ((0, 4), (4, 8), (8, 10))]
    for key in ("backbone", "features"):
        np.testing.assert_allclose(out[key].numpy(), np.concatenate([p[key].numpy() for p in parts]), atol=1e-5)
    first_only(x[:4])
    after, expected = _stats(chunked), _stats(first_only)
    assert after.keys() == expected.keys() and len(after) > 10
    for key in after:
        np.testing.assert_allclose(after[key], expected[key], rtol=1e-6, atol=1e-7)
        assert not np.allclose(after[key], before[key])  # the first chunk did update them

    # the loss sees the whole batch and gradients reach every chunk
    chunked.clear_gradients()
    (out["features"] ** 2).sum().backward()
    separate.clear_gradients()
    sum((p["features"] ** 2).sum() for p in parts).backward()
    g1 = dict(chunked.named_parameters())
    for name, p in separate.named_parameters():
        if p.grad is not None:
            np.testing.assert_allclose(g1[name].grad.numpy(), p.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_off_by_default_and_in_eval():
    paddle.seed(4)
    model = build_model(dict(ARCH, bn_batch_size=4))
    model.eval()
    x = paddle.randn([8, 3, 32, 16])
    ref = build_model(ARCH)
    ref.set_state_dict(model.state_dict())
    ref.eval()
    np.testing.assert_allclose(model(x)["features"].numpy(), ref(x)["features"].numpy(), atol=1e-6)
    assert build_model(ARCH).bn_batch_size is None
    with pytest.raises(ConfigError, match="Arch.bn_batch_size"):
        build_model(dict(ARCH, bn_batch_size=0))
