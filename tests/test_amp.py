"""AMP (PaddleClas's ``AMP:`` section) and ``Global.to_static``: settings, extraction, one training step."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from ppise.engine.amp import (AmpScaler, AmpSettings, AmpTrainStep, amp_settings, apply_to_static,
                              decorate)
from ppise.engine.extract import extract_features
from ppise.errors import ConfigError

ARCH = {"name": "RecModel", "Backbone": {"name": "ResNetMini", "pretrained": False, "stem_channels": 8,
                                          "widths": [8, 16, 16, 32], "out_channels": 32},
        "Neck": {"name": "BNNeck", "num_features": 32}}


def _model():
    from ppise.arch import build_model

    paddle.seed(3)
    return build_model(dict(ARCH))


def _batches(n=24, batch=8):
    rng = np.random.RandomState(0)
    images = rng.rand(n, 3, 64, 32).astype("float32")
    return [(paddle.to_tensor(images[i:i + batch]), np.zeros(len(images[i:i + batch]), np.int64),
             np.zeros(len(images[i:i + batch]), np.int64), np.arange(i, i + len(images[i:i + batch])))
            for i in range(0, n, batch)]


def test_paddleclas_amp_section_is_read():
    amp = amp_settings({"AMP": {"use_amp": True, "use_fp16_test": False, "scale_loss": 128.0,
                                "use_dynamic_loss_scaling": True, "use_promote": False, "level": "O1"}}, device="gpu")
    assert amp.enabled and amp.dtype == "float16" and amp.needs_scaling and amp.scale_loss == 128.0 and not amp.eval
    assert not amp_settings({}).enabled and not amp_settings({"AMP": None}).enabled
    assert not amp_settings({"AMP": {"use_amp": False}}, device="gpu").enabled
    assert amp_settings({"AMP": {"level": "O2", "dtype": "bfloat16"}}, device="gpu:1").eval  # O2 casts eval too
    bf16 = amp_settings({"AMP": {"dtype": "bfloat16", "scale_loss": 1024.0}}, device="gpu")
    assert bf16.enabled and not bf16.needs_scaling  # bfloat16 has float32's range: no loss scaling
    with pytest.raises(ConfigError, match="did you mean 'scale_loss'"):
        amp_settings({"AMP": {"scale_los": 2.0}}, device="gpu")
    with pytest.raises(ConfigError, match="AMP.level must be one of O1, O2"):
        amp_settings({"AMP": {"level": "O3"}}, device="gpu")
    with pytest.raises(ConfigError, match="AMP.dtype must be one of float16, bfloat16"):
        amp_settings({"AMP": {"dtype": "int8"}}, device="gpu")


def test_amp_on_cpu_is_ignored_with_a_warning(caplog):
    """Paddle 3.3: auto_cast is a no-op on CPU and conv2d has no bfloat16 CPU kernel, so the run is float32."""
    with pytest.warns(UserWarning, match="amp_guard can only be enabled"):  # Paddle's own no-op
        with paddle.amp.auto_cast(dtype="bfloat16"):
            assert paddle.nn.Conv2D(3, 4, 3)(paddle.rand([1, 3, 8, 8])).dtype == paddle.float32
    for dtype in ("float16", "bfloat16"):
        assert not amp_settings({"AMP": {"dtype": dtype, "level": "O2"}}, device="cpu").enabled


def test_config_accepts_amp_section_and_to_static():
    from ppise.config import get_config
    from tiny import DEMO

    cfg = get_config(DEMO, ["AMP.dtype=bfloat16", "AMP.level=O1", "Global.to_static=True"])
    assert (cfg["AMP"]["dtype"], cfg["AMP"]["level"], cfg["AMP"]["use_amp"]) == ("bfloat16", "O1", True)
    assert cfg["Global"]["to_static"] is True
    assert amp_settings(cfg, device="gpu").enabled and not amp_settings(cfg).enabled  # demo: device cpu


class _Bf16Features(paddle.nn.Layer):
    """Rounds the model's features to bfloat16, as a bfloat16 forward pass would hand them out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return dict(out, features=out["features"].astype("bfloat16"))


def test_extraction_casts_low_precision_features_to_float32():
    model, batches = _model(), _batches()
    fp32 = extract_features(model, batches)["feats"]
    bf16 = extract_features(_Bf16Features(model), batches, amp=AmpSettings(enabled=True, dtype="bfloat16", eval=True))["feats"]
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    cosine = (fp32 * bf16).sum(1)  # both L2-normalised
    assert cosine.min() > 0.999, cosine.min()
    assert not np.array_equal(fp32, bf16)


def test_to_static_extraction_equals_dygraph():
    model, batches = _model(), _batches()
    dygraph = extract_features(model, batches)["feats"]
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    apply_to_static(model, {"to_static": True}, training=False)
    static = extract_features(model, batches)["feats"]
    np.testing.assert_allclose(static, dygraph, atol=1e-5)
    assert set(model.state_dict()) == set(state)  # checkpoint keys unchanged
    assert apply_to_static(model, {"to_static": False}) is model


class _MemoryObjective(paddle.nn.Layer):
    """A float32 memory objective standing in for ClusterMemoryLoss under the Objective contract."""

    needs_clusters = True

    def __init__(self, dim=32, classes=4):
        super().__init__()
        self.register_buffer("memory", paddle.nn.functional.normalize(paddle.randn([classes, dim]), axis=1))
        self.seen_dtypes = []
        self._last = None

    def losses(self, outputs, labels, progress):
        feats = paddle.nn.functional.normalize(outputs["features"], axis=1)
        self.seen_dtypes.append(outputs["features"].dtype)
        self._last = (feats.detach(), labels)
        logits = paddle.matmul(feats, self.memory, transpose_y=True) / 0.05
        return {"loss_memory": paddle.nn.functional.cross_entropy(logits, labels)}

    def update(self):
        feats, labels = self._last
        rows = paddle.gather(self.memory, labels)
        new = paddle.nn.functional.normalize(0.2 * rows + 0.8 * feats, axis=1)
        self.memory = paddle.scatter(self.memory, labels, new, overwrite=True)


def test_train_step_keeps_objective_float32():
    model = _model()
    model.train()
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
    amp = AmpSettings(enabled=True, dtype="bfloat16", level="O1")
    objective = _MemoryObjective()
    step = AmpTrainStep(_Bf16Features(model), objective, opt, amp)  # bf16 features reach the step
    images, _, _, _ = _batches(n=8)[0]
    labels = paddle.to_tensor(np.arange(8) % 4)
    before = {k: v.astype("float32").numpy().copy() for k, v in model.state_dict().items()}
    losses = [step(images, labels, progress=i / 3) for i in range(3)]
    assert all(np.isfinite(float(l["loss"])) for l in losses)
    assert objective.seen_dtypes == [paddle.float32] * 3 and objective.memory.dtype == paddle.float32
    after = model.state_dict()
    assert any(not np.allclose(before[k], after[k].astype("float32").numpy()) for k in before)
    assert step.scaler.state_dict() == {}  # bfloat16: no loss scaling


def test_o2_decorate_keeps_float32_masters_and_checkpoints(monkeypatch):
    """paddle.amp.decorate is a no-op on CPU, so the call itself is checked (the GPU cast is untested here)."""
    model = _model()
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
    assert decorate(model, opt, AmpSettings(enabled=True, level="O1")) == (model, opt)
    assert decorate(model, opt, AmpSettings(enabled=False, level="O2")) == (model, opt)
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return kwargs["models"], kwargs["optimizers"]

    monkeypatch.setattr(paddle.amp, "decorate", fake)
    assert decorate(model, opt, AmpSettings(enabled=True, dtype="bfloat16", level="O2")) == (model, opt)
    assert seen["level"] == "O2" and seen["dtype"] == "bfloat16" and seen["save_dtype"] == "float32" and seen["master_weight"]


def test_float16_scaler_drives_the_step():
    """The GradScaler wrapper (float16 on GPU; its scaling is untested here: on CPU GradScaler disables itself)."""
    net = paddle.nn.Linear(4, 2)
    opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=net.parameters())
    scaler = AmpScaler(AmpSettings(enabled=True, dtype="float16", scale_loss=8.0, use_dynamic_loss_scaling=True))
    assert scaler.scaler is not None
    w = net.weight.numpy().copy()
    scaler.backward(net(paddle.ones([3, 4])).sum())
    scaler.step(opt)
    assert not np.allclose(w, net.weight.numpy())
    scaler.set_state_dict(scaler.state_dict())  # resume round trip
    assert AmpScaler(AmpSettings(enabled=True, dtype="bfloat16")).scaler is None


def test_to_static_training_steps_equal_dygraph():
    """A few training steps through the trainer's Precision step, then extraction: compiled equals dygraph."""
    from ppise.engine.amp import Precision

    flag = paddle.get_flags(["FLAGS_use_mkldnn"])["FLAGS_use_mkldnn"]
    images, _, _, _ = _batches(n=8)[0]
    labels = paddle.to_tensor(np.arange(8) % 4)
    runs = {}
    try:
        for mode in ("dygraph", "static"):
            model = _model()
            if mode == "static":
                apply_to_static(model, {"to_static": True}, training=True)  # on CPU: oneDNN off for training
            else:
                paddle.set_flags({"FLAGS_use_mkldnn": False})  # the same kernels as the compiled run
            model.train()
            opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
            paddle.seed(7)
            objective, precision, losses = _MemoryObjective(), Precision(), []
            for i in range(3):
                loss = objective.losses(precision.forward(model, images), labels, i / 3)["loss_memory"]
                opt.clear_grad()
                precision.backward(loss)
                precision.step(opt)
                objective.update()
                losses.append(float(loss))
            runs[mode] = (losses, {k: v.numpy().copy() for k, v in model.state_dict().items()},
                          extract_features(model, _batches())["feats"])
    finally:
        paddle.set_flags({"FLAGS_use_mkldnn": flag})
    (dl, dw, df), (sl, sw, sf) = runs["dygraph"], runs["static"]
    np.testing.assert_allclose(sl, dl, rtol=1e-5)
    assert set(sw) == set(dw)  # checkpoint keys unchanged by compilation
    for name in dw:
        np.testing.assert_allclose(sw[name], dw[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(sf, df, atol=1e-5)


def test_precision_state_resumes_across_amp_on_and_off(caplog):
    """A float16 loss scale in a checkpoint is dropped by a run without scaling, and a scaling run
    starts from AMP.scale_loss without one (on CPU GradScaler disables itself, so the state is synthetic)."""
    from ppise.engine.amp import Precision

    import logging

    logging.getLogger("ppise").propagate = True  # ppise's logger keeps to its own handlers
    try:
        with caplog.at_level(logging.INFO, logger="ppise"):
            plain = Precision()
            assert plain.state_dict() == {}
            plain.set_state_dict({"scale": 1024.0, "incr_count": 3})  # written by a float16 run
            assert plain.scaler.scaler is None
            scaling = Precision(AmpSettings(enabled=True, dtype="float16", scale_loss=64.0, use_dynamic_loss_scaling=True))
            scaling.set_state_dict({})  # written without AMP
            scaling.set_state_dict(None)  # a checkpoint from before the key existed
            assert scaling.scaler.scaler is not None
    finally:
        logging.getLogger("ppise").propagate = False
    messages = [r.getMessage() for r in caplog.records]
    assert any("scale ignored" in m for m in messages) and any("AMP.scale_loss=64.0" in m for m in messages)


def test_trainer_checkpoint_carries_the_loss_scale():
    from ppise.engine.amp import Precision
    from ppise.engine.trainer import Trainer

    model = _model()
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
    trainer = Trainer(model, opt, None, _MemoryObjective(), None, None, None, [], 1, 1,
                      precision=Precision(AmpSettings(enabled=True, dtype="float16", scale_loss=8.0)))
    trainer.precision.scaler.state_dict = lambda: {"scale": 8.0}  # CPU: GradScaler keeps no state
    state = trainer.state_dict()
    assert state["training"]["amp_scaler"] == {"scale": 8.0}
    assert all(v.dtype == paddle.float32 for v in state["model"].values() if paddle.is_floating_point(v))
