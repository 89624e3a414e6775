"""Mixed precision (PaddleClas's ``AMP:`` section, plus ``dtype``) and ``Global.to_static``.

    AMP:
      use_amp: True                  # optional; a present section means on unless this is False
      scale_loss: 128.0              # initial loss scale (float16 only)
      use_dynamic_loss_scaling: True # float16 only
      use_promote: False             # paddle.amp.auto_cast(use_promote=...)
      use_fp16_test: False           # also cast eval-mode feature extraction (clustering, evaluation)
      level: O1                      # O1: listed ops in low precision; O2: the whole model (weights kept in float32 masters)
      dtype: float16                 # float16 (GPU) | bfloat16 (GPU with bf16)

Model outputs are cast to float32 before any loss: the memory's momentum-0.2 updates of unit
vectors fall below a bfloat16 rounding step, and the 1/0.05 logits overflow float16 when scaled.
Checkpoints stay float32 (resume with AMP on or off). On CPU Paddle 3.3's ``auto_cast`` does
nothing and has no bfloat16 ``conv2d``: the section is logged and ignored, the GPU paths untested.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..config import check_plain_section
from ..errors import ConfigError
from ..utils.logger import logger


@dataclass(frozen=True)
class AmpSettings:
    enabled: bool = False
    level: str = "O1"
    dtype: str = "float16"
    scale_loss: float = 1.0
    use_dynamic_loss_scaling: bool = False
    use_promote: bool = False
    eval: bool = False  # cast eval-mode extraction too (use_fp16_test, forced by O2 as in PaddleClas)

    @property
    def needs_scaling(self) -> bool:
        return self.enabled and self.dtype == "float16"


def amp_settings(cfg: Dict[str, Any], device: Optional[str] = None) -> AmpSettings:
    """The checked ``AMP`` section (absent or null: off); on a ``cpu`` device (default
    ``Global.device``) it is logged and off."""
    section = cfg.get("AMP")
    if section is None:
        return AmpSettings()
    if not isinstance(section, dict):
        raise ConfigError(f"section AMP must be a mapping, got {section!r}")
    section = check_plain_section(dict(section), "AMP")  # keys, types, values: config.AMP_SCHEMA
    enabled, level, dtype = section["use_amp"], section["level"], section["dtype"]
    device = str(device or (cfg.get("Global") or {}).get("device", "cpu"))
    if enabled and device.startswith("cpu"):
        logger.warning(f"AMP ({dtype} {level}) ignored on CPU: Paddle's auto_cast acts on GPU/XPU/custom "
                       f"devices only and has no CPU bfloat16 conv kernel; this run is float32")
        enabled = False
    return AmpSettings(
        enabled=enabled, level=level, dtype=dtype, scale_loss=float(section["scale_loss"]),
        use_dynamic_loss_scaling=section["use_dynamic_loss_scaling"], use_promote=section["use_promote"],
        eval=enabled and (section["use_fp16_test"] or level == "O2"),
    )


def autocast(amp: Optional[AmpSettings], is_eval: bool = False):
    """Context for the model's forward pass: ``paddle.amp.auto_cast`` when AMP applies, else nothing."""
    if amp is None or not amp.enabled or (is_eval and not amp.eval):
        return contextlib.nullcontext()
    import paddle

    return paddle.amp.auto_cast(enable=True, level=amp.level, dtype=amp.dtype, use_promote=amp.use_promote)


def to_float32(outputs: Any) -> Any:
    """Float16 / bfloat16 tensors of a model output (tensor or dict) cast to float32."""
    import paddle

    if isinstance(outputs, dict):
        return {k: to_float32(v) for k, v in outputs.items()}
    if isinstance(outputs, paddle.Tensor) and outputs.dtype in (paddle.float16, paddle.bfloat16):
        return outputs.astype("float32")
    return outputs


def decorate(model, optimizer=None, amp: Optional[AmpSettings] = None):
    """O2: ``paddle.amp.decorate`` the model and optimizer (float32 masters and checkpoints);
    O1 and AMP off return ``(model, optimizer)`` unchanged."""
    if amp is None or not amp.enabled or amp.level != "O2":
        return model, optimizer
    import paddle

    out = paddle.amp.decorate(models=model, optimizers=optimizer, level="O2", dtype=amp.dtype,
                              master_weight=True, save_dtype="float32")
    return out if optimizer is not None else (out, None)


class AmpScaler:
    """Backward and optimizer step with float16 loss scaling (``paddle.amp.GradScaler``), else
    plain; its state is the dynamic scale (empty without scaling)."""

    def __init__(self, amp: AmpSettings) -> None:
        self.scaler = None
        if amp.needs_scaling:
            import paddle

            self.scaler = paddle.amp.GradScaler(init_loss_scaling=amp.scale_loss,
                                                use_dynamic_loss_scaling=amp.use_dynamic_loss_scaling)

    def backward(self, loss) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)  # unscales; skips the step on inf/nan gradients
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> Dict[str, Any]:
        return dict(self.scaler.state_dict()) if self.scaler is not None else {}

    def set_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class Precision:
    """Forward, backward and optimizer step under the ``AMP`` settings, so ``Trainer.run_step``
    has no AMP branches; a resume accepts checkpoints written with AMP on or off."""

    def __init__(self, amp: Optional[AmpSettings] = None) -> None:
        self.amp = amp or AmpSettings()
        self.scaler = AmpScaler(self.amp)

    def forward(self, model, inputs):
        """The model's outputs, cast to float32 before the objective sees them (see the module)."""
        with autocast(self.amp):
            outputs = model(inputs)
        return to_float32(outputs)

    def backward(self, loss) -> None:
        self.scaler.backward(loss)

    def step(self, optimizer) -> None:
        self.scaler.step(optimizer)

    def state_dict(self) -> Dict[str, Any]:
        return self.scaler.state_dict()

    def set_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        if state and self.scaler.scaler is None:
            logger.info("checkpoint holds a float16 loss scale; this run does not scale the loss (AMP off or "
                        "bfloat16): scale ignored")
        elif not state and self.scaler.scaler is not None:
            logger.info(f"checkpoint holds no loss scale (written without float16 AMP): starting from "
                        f"AMP.scale_loss={self.amp.scale_loss}")
        self.scaler.set_state_dict(state)


class AmpTrainStep(Precision):
    """One whole training step under ``amp`` (tests; ``Trainer.run_step`` makes the same calls)."""

    def __init__(self, model, objective, optimizer, amp: AmpSettings) -> None:
        super().__init__(amp)
        self.model, self.objective, self.optimizer = model, objective, optimizer

    def __call__(self, images, labels, progress: float) -> Dict[str, Any]:
        losses = self.objective.losses(self.forward(self.model, images), labels, progress)
        total = sum(losses.values())
        self.backward(total)
        self.step(self.optimizer)
        self.optimizer.clear_grad()
        self.objective.update()
        return dict(losses, loss=total)


def apply_to_static(model, glob: Dict[str, Any], training: bool = True):
    """``Global.to_static: True``: compile ``model``'s forward with ``paddle.jit.to_static`` in
    place, as PaddleClas's ``apply_to_static``. Training on CPU turns oneDNN off: Paddle 3.3's
    static backward aborts in ``onednn_op.pool2d_grad``."""
    if not glob.get("to_static"):
        return model
    import paddle

    if training and paddle.device.get_device() == "cpu" and paddle.get_flags(["FLAGS_use_mkldnn"]).get("FLAGS_use_mkldnn"):
        logger.warning("Global.to_static with training on CPU: oneDNN switched off (Paddle 3.3's static "
                       "backward aborts in onednn pool2d_grad)")
        paddle.set_flags({"FLAGS_use_mkldnn": False})
    model.forward = paddle.jit.to_static(model.forward, full_graph=True)
    logger.info("Global.to_static: model forward compiled with paddle.jit.to_static")
    return model

