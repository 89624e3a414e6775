"""``Arch.Neck.bias_attr: {trainable: false}``: the official BN-neck bias, frozen at 0 and not optimised."""
import numpy as np
import paddle
import pytest

from ppise.arch.neck.bnneck import BNNeck
from ppise.arch.neck.gem import GeM
from ppise.optimizer import build_optimizer

OPT = {"name": "Adam", "lr": {"name": "Constant", "learning_rate": 0.1}, "regularizer": {"name": "L2", "coeff": 0.5}}


@pytest.mark.parametrize("make", [lambda attr: BNNeck(8, bias_attr=attr),
                                  lambda attr: GeM(num_features=8, bias_attr=attr)])
def test_frozen_bias_stays_zero_and_out_of_the_optimizer(make):
    paddle.seed(0)
    frozen, default = make({"trainable": False}), make(None)
    for neck in (frozen, default):
        neck.train()
        opt, _ = build_optimizer(OPT, neck.parameters(), 10, 1)
        ids = {id(p) for p in opt._parameter_list}
        bias = neck.feat_bn.bias
        assert (id(bias) in ids) == (neck is default)
        assert id(neck.feat_bn._mean) not in ids and id(neck.feat_bn._variance) not in ids
        np.testing.assert_array_equal(bias.numpy(), 0.0)
        x = paddle.randn([16, 8, 2, 2]) if isinstance(neck, GeM) else paddle.randn([16, 8])
        for _ in range(3):
            (neck(x) * paddle.linspace(-1, 1, 8)).sum().backward()  # d loss / d bias != 0
            opt.step()
            opt.clear_grad()
        if neck is frozen:
            np.testing.assert_array_equal(bias.numpy(), 0.0)
            assert bias.stop_gradient
        else:
            assert np.abs(bias.numpy()).max() > 0.1


def test_default_bias_is_trainable_paddleclas_keys_unchanged():
    assert sorted(BNNeck(8).state_dict()) == sorted(BNNeck(8, bias_attr={"trainable": False}).state_dict())
    assert not BNNeck(8).feat_bn.bias.stop_gradient
