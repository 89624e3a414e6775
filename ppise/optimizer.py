"""Optimizers and learning-rate schedules from the PaddleClas ``Optimizer`` section.

Schedules step once per iteration (PaddleClas semantics): epoch-valued keys such as
``step_size``, ``decay_epochs`` and ``warmup_epoch`` are converted with ``iters_per_epoch``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import paddle
from paddle.optimizer import lr as lr_module

from .errors import ConfigError
from .registry import LR_SCHEDULERS, OPTIMIZERS, PADDLECLAS_COMPONENT_KEYS


@LR_SCHEDULERS.register(name="Constant")
def constant(learning_rate: float, iters_per_epoch: int, epochs: int, **_: Any):
    return lr_module.LambdaDecay(learning_rate, lambda it: 1.0)


@LR_SCHEDULERS.register(name="Step")
def step(learning_rate: float, iters_per_epoch: int, epochs: int, step_size: float = 20, gamma: float = 0.1, by_epoch: bool = False, **_: Any):
    """Multiply by ``gamma`` every ``step_size`` epochs (cluster-contrast's StepLR)."""
    size = int(round(step_size * iters_per_epoch)) if not by_epoch else int(step_size)
    if size < 1:
        raise ConfigError(f"Optimizer.lr.step_size must be > 0, got {step_size!r}")
    return lr_module.StepDecay(learning_rate, step_size=size, gamma=gamma)


@LR_SCHEDULERS.register(name="Piecewise")
def piecewise(learning_rate: float, iters_per_epoch: int, epochs: int, decay_epochs: List[float] = (), values: List[float] = None, gamma: float = 0.1, **_: Any):
    bounds = [int(round(e * iters_per_epoch)) for e in decay_epochs]
    if values is None:
        values = [learning_rate * gamma**i for i in range(len(bounds) + 1)]
    if len(values) != len(bounds) + 1:
        raise ConfigError(f"Optimizer.lr.values needs {len(bounds) + 1} entries for decay_epochs {list(decay_epochs)}, got {len(values)}")
    return lr_module.PiecewiseDecay(bounds, list(values))


@LR_SCHEDULERS.register(name="Cosine")
def cosine(learning_rate: float, iters_per_epoch: int, epochs: int, eta_min: float = 0.0, warmup_epoch: float = 0, **_: Any):
    total = max(1, int(round((epochs - warmup_epoch) * iters_per_epoch)))
    return lr_module.CosineAnnealingDecay(learning_rate, T_max=total, eta_min=eta_min)


def build_lr_scheduler(lr_cfg: Any, iters_per_epoch: int, epochs: int, where: str = "Optimizer.lr"):
    """Build a per-iteration schedule, wrapped in linear warmup when ``warmup_epoch`` > 0."""
    if isinstance(lr_cfg, (int, float)) and not isinstance(lr_cfg, bool):
        lr_cfg = {"name": "Constant", "learning_rate": float(lr_cfg)}
    if not isinstance(lr_cfg, dict) or "learning_rate" not in lr_cfg:
        raise ConfigError(f"{where} must be a number or a mapping with name and learning_rate, got {lr_cfg!r}")
    spec = dict(lr_cfg, name=lr_cfg.get("name", "Constant"))
    warmup_epoch = float(spec.pop("warmup_epoch", 0) or 0)  # any schedule; Cosine reads it too
    warmup_start = float(spec.pop("warmup_start_lr", 0.0))
    sched = LR_SCHEDULERS.build(spec, where, tolerated=PADDLECLAS_COMPONENT_KEYS, epochs=epochs,
                                iters_per_epoch=iters_per_epoch, warmup_epoch=warmup_epoch)
    warmup_steps = int(round(warmup_epoch * iters_per_epoch))
    if warmup_steps > 0:
        sched = lr_module.LinearWarmup(sched, warmup_steps=warmup_steps, start_lr=warmup_start,
                                       end_lr=float(spec["learning_rate"]))
    return sched


def _regularizer(cfg: Dict[str, Any], where: str):
    reg = cfg.pop("regularizer", None)
    wd = cfg.pop("weight_decay", None)
    if reg is not None:
        if not isinstance(reg, dict) or reg.get("name", "L2") not in ("L2", "L1"):
            raise ConfigError(f"{where}.regularizer must be {{name: L2|L1, coeff: float}}, got {reg!r}")
        coeff = float(reg.get("coeff", 0.0))
        return paddle.regularizer.L1Decay(coeff) if reg.get("name") == "L1" else paddle.regularizer.L2Decay(coeff)
    return float(wd) if wd is not None else None


@OPTIMIZERS.register(name="Adam")
def adam(parameters, learning_rate, weight_decay=None, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, **_: Any):
    return paddle.optimizer.Adam(learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon, parameters=parameters, weight_decay=weight_decay)


@OPTIMIZERS.register(name="AdamW")
def adamw(parameters, learning_rate, weight_decay=None, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, **_: Any):
    wd = weight_decay if isinstance(weight_decay, float) else 0.01
    return paddle.optimizer.AdamW(learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon, parameters=parameters, weight_decay=wd)


@OPTIMIZERS.register(name="Momentum")
def momentum(parameters, learning_rate, weight_decay=None, momentum: float = 0.9, use_nesterov: bool = False, **_: Any):
    return paddle.optimizer.Momentum(learning_rate=learning_rate, momentum=momentum, parameters=parameters, use_nesterov=use_nesterov, weight_decay=weight_decay)


@OPTIMIZERS.register(name="SGD")
def sgd(parameters, learning_rate, weight_decay=None, **_: Any):
    return paddle.optimizer.SGD(learning_rate=learning_rate, parameters=parameters, weight_decay=weight_decay)


def build_optimizer(opt_cfg: Dict[str, Any], parameters, iters_per_epoch: int, epochs: int, where: str = "Optimizer") -> Tuple[Any, Any]:
    """Return (optimizer, lr_scheduler) from the ``Optimizer`` section."""
    if not isinstance(opt_cfg, dict) or "name" not in opt_cfg:
        raise ConfigError(f"{where} must be a mapping with a name (Adam, Momentum, ...), got {opt_cfg!r}")
    OPTIMIZERS.get(opt_cfg["name"], where=f"{where}.name")  # an unknown name fails first
    if "lr" not in opt_cfg:
        raise ConfigError(f"missing required config key {where}.lr")
    spec = dict(opt_cfg)
    sched = build_lr_scheduler(spec.pop("lr"), iters_per_epoch, epochs, where=f"{where}.lr")
    weight_decay = _regularizer(spec, where)
    # Frozen parameters (``trainable: false``, e.g. the official BN-neck bias) and BN running
    # statistics stay out of the optimizer: no update, no weight decay, no accumulators.
    parameters = [p for p in parameters if isinstance(p, dict) or not p.stop_gradient]
    opt = OPTIMIZERS.build(spec, where, tolerated=PADDLECLAS_COMPONENT_KEYS, parameters=parameters,
                           learning_rate=sched, weight_decay=weight_decay)
    return opt, sched
