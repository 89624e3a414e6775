"""Model parity: the RecModel paddleclas builds vs the one ppise builds, from one config.

Both models get the same weights file: ``--weights`` when given, else paddleclas's own
random initialisation saved as ``.pdparams``. paddleclas loads it its own way
(``load_dygraph_pretrain``, non-strict like PaddleClas); ppise loads it strictly (same keys,
same shapes, nothing missing or unexpected). Then both run in eval mode on the same
preprocessed images and every output (backbone, neck, features, logits) is compared.

paddleclas's random init leaves every BatchNorm as an identity (weight 1, bias 0, running
mean 0, running variance 1), so a BN tensor loaded into the wrong slot would change nothing.
The generated weights therefore get random BN affine parameters and statistics first (``randomize_batchnorm``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from .context import FEATURE_TOL, ParityContext
from .report import NOTE, Row, check_row, compare_row, describe_array, max_abs_diff

SECTION = "model"
OUTPUT_KEYS = ("backbone", "neck", "features", "logits")


@dataclass(frozen=True)
class ModelResult:
    """The model section's rows and what the later sections compare against."""

    rows: List[Row]
    weights: Optional[str] = None  # ppise's state dict as checked (after any --perturb); None if it stopped early
    dygraph: Dict[str, np.ndarray] = field(default_factory=dict)  # "paddleclas" / "ppise" eval features [N, D]
    paddleclas_shapes: Dict[str, tuple] = field(default_factory=dict)  # the full official Arch, key -> shape


def build_paddleclas_model(cfg: Dict[str, Any], arch: Optional[Dict[str, Any]] = None):
    """``paddleclas.ppcls.arch.build_model`` on ``arch`` (default: the config's), never downloading."""
    from paddleclas.ppcls.arch import build_model

    arch = copy.deepcopy(arch if arch is not None else cfg["Arch"])
    backbone = arch.get("Backbone") or {}
    if backbone.get("pretrained"):
        backbone["pretrained"] = False
    model = build_model({"Arch": arch, "Global": {"device": cfg["Global"].get("device", "cpu")}}, mode="eval")
    model.eval()
    return model


def build_ppise_model(arch: Dict[str, Any], where: str = "Arch"):
    from ..arch import build_model

    model = build_model(copy.deepcopy(arch), where=where, skip_backbone_pretrained=True)
    model.eval()
    return model


def _batchnorms(model) -> list:
    return [layer for _, layer in model.named_sublayers()
            if getattr(layer, "_mean", None) is not None and getattr(layer, "_variance", None) is not None
            and getattr(layer, "weight", None) is not None]


def randomize_batchnorm(model, batch: np.ndarray, seed: int) -> int:
    """Give every BN layer trained-looking, distinct tensors; returns the number of BN layers.

    Weight and bias are random. Running statistics are set in one eval-mode pass over
    ``batch``: just before each BN runs, a hook reads the scale of its actual input (mean and
    variance pooled over all channels) and sets per-channel statistics scattered around it.
    Activations thus stay at a trained-like scale (a random ResNet-50 otherwise reaches
    ~1e4) while no channel is centred on these very images, which would make the features
    cancellation-prone and their float32 round-off 100x larger than a real model's. Layer
    order is fixed, so a seed always gives the same tensors.
    """
    import paddle

    rng = np.random.default_rng(seed)
    bns = _batchnorms(model)

    def set_stats(layer, inputs):
        x = inputs[0].numpy().astype(np.float64)
        axes = tuple(i for i in range(x.ndim) if i != 1)
        n = int(layer._mean.shape[0])
        scale = float(np.mean(np.var(x, axis=axes))) + 1e-6
        centre = float(np.mean(x))
        layer._variance.set_value(paddle.to_tensor((scale * rng.uniform(0.5, 1.5, n)).astype(np.float32)))
        layer._mean.set_value(paddle.to_tensor((centre + np.sqrt(scale) * rng.normal(0.0, 0.1, n)).astype(np.float32)))

    for layer in bns:
        n = int(layer._mean.shape[0])
        layer.weight.set_value(paddle.to_tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)))
        if getattr(layer, "bias", None) is not None:
            layer.bias.set_value(paddle.to_tensor(rng.normal(0.0, 0.1, n).astype(np.float32)))
    hooks = [layer.register_forward_pre_hook(set_stats) for layer in bns]
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.to_tensor(batch))
    finally:
        for hook in hooks:
            hook.remove()
    return len(bns)


def forward_outputs(model, batch: np.ndarray) -> Dict[str, np.ndarray]:
    """Every RecModel output as numpy ([N, C, 1, 1] backbone maps flattened to [N, C])."""
    import paddle

    model.eval()
    with paddle.no_grad():
        out = model(paddle.to_tensor(batch))
    return {k: np.asarray(v.numpy()).reshape(v.shape[0], -1) for k, v in out.items() if k in OUTPUT_KEYS}


def shapes(state: Dict[str, Any]) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of a state dict (tensors or arrays); a key -> shape tuple map is returned as is."""
    return {k: v if isinstance(v, tuple) else tuple(int(d) for d in (v.shape if hasattr(v, "shape") else np.shape(v)))
            for k, v in state.items()}


def key_report(file_state: Dict[str, Any], model_state: Dict[str, Any]) -> Dict[str, List]:
    """Strict comparison of a weights file with a model (state dicts or key -> shape maps)."""
    fs, ms = shapes(file_state), shapes(model_state)
    return {"missing": sorted(k for k in ms if k not in fs), "unexpected": sorted(k for k in fs if k not in ms),
            "mismatched": sorted(f"{k} {list(fs[k])} vs {list(ms[k])}" for k in ms if k in fs and fs[k] != ms[k])}


def report_text(rep: Dict[str, List]) -> str:
    return ", ".join(f"{len(v)} {k}" for k, v in rep.items())


def is_clean(rep: Dict[str, List]) -> bool:
    return not any(rep.values())


def head_keys(keys: Iterable[str]) -> List[str]:
    return sorted(k for k in keys if k.startswith("head."))


def apply_perturbation(model, spec: str) -> str:
    """``NAME[=DELTA]``: add DELTA (default 0.01) to element 0 of parameter/buffer NAME.

    A self-test of the check: the ppise side then differs from paddleclas by one weight.
    """
    import paddle

    name, _, delta = spec.partition("=")
    state = model.state_dict()
    if name not in state:
        raise ConfigError(f"--perturb {spec!r}: the ppise model has no tensor {name!r} (e.g. {next(iter(state))})")
    try:
        step = float(delta) if delta else 0.01
    except ValueError:
        raise ConfigError(f"--perturb {spec!r}: DELTA must be a number") from None
    value = state[name].numpy().copy()
    value.reshape(-1)[0] += step
    state[name].set_value(paddle.to_tensor(value))
    return f"{name}[0] += {step:g}"


def _load_into_paddleclas(ctx: ParityContext, model, path: str) -> List[Row]:
    import paddle
    from paddleclas.ppcls.utils.save_load import load_dygraph_pretrain

    rep = key_report(paddle.load(path), model.state_dict())
    load_dygraph_pretrain(model, path)
    heads = head_keys(rep["missing"])
    only_head = rep["missing"] == heads and not rep["unexpected"] and not rep["mismatched"]
    detail = ""
    if heads and only_head:
        detail = (f"{path} has no {', '.join(heads)}: the config's Head is not in the weights file; "
                  "paddleclas keeps its random head, ppise skips head.* (logits are not compared)")
    return [check_row(SECTION, "weights -> paddleclas RecModel", report_text(rep), "", is_clean(rep) or only_head,
                      detail)]


def run_model_section(ctx: ParityContext) -> ModelResult:
    import paddle

    from ..utils.weights import load_pretrained, resolve_weights_path

    opts = ctx.options
    rows: List[Row] = []
    paddle.seed(opts.seed)
    pc = build_paddleclas_model(ctx.cfg)
    if opts.weights:
        weights = resolve_weights_path(opts.weights, "--weights")
        rows += _load_into_paddleclas(ctx, pc, weights)
    else:
        n_bn = randomize_batchnorm(pc, ctx.batch, opts.seed)
        weights = ctx.path("paddleclas_init.pdparams")
        paddle.save(pc.state_dict(), weights)
        rows.append(Row(SECTION, "weights", "random init saved", "", status=NOTE,
                        detail=f"no --weights: paddleclas's random initialisation saved to {weights}, its {n_bn} "
                               "BatchNorm layers given random weight/bias and running statistics scattered "
                               "around the scale of their input (at init BN is an identity, which would hide a "
                               "misplaced BN tensor)"))
    pp = build_ppise_model(ctx.cfg["Arch"])
    file_keys = set(paddle.load(weights).keys()) if opts.weights else set(pc.state_dict())
    skip = ("head.",) if head_keys(pp.state_dict()) and not head_keys(file_keys) else ()
    try:
        rep = load_pretrained(pp, weights, strict=True, skip_prefixes=skip, config_key="--weights")
        rows.append(check_row(SECTION, "weights -> ppise RecModel (strict)", "",
                              f"{rep['loaded']} tensors, 0 missing, 0 unexpected, 0 shape"
                              + (" (head.* skipped)" if skip else ""), True))
    except ConfigError as err:
        rows.append(check_row(SECTION, "weights -> ppise RecModel (strict)", "", "refused", False, str(err)))
        return ModelResult(rows)
    pc_state, pp_state = shapes(pc.state_dict()), shapes(pp.state_dict())
    same = pc_state == pp_state
    diff_keys = sorted(set(pc_state) ^ set(pp_state)) + sorted(k for k in pc_state if k in pp_state and pc_state[k] != pp_state[k])
    rows.append(check_row(SECTION, "state-dict keys and shapes", f"{len(pc_state)} tensors", f"{len(pp_state)} tensors",
                          same, "" if same else f"differing keys: {', '.join(diff_keys[:8])}"))
    if opts.perturb:
        what = apply_perturbation(pp, opts.perturb)
        rows.append(Row(SECTION, "perturbation (self-test)", "", what, status=NOTE,
                        detail=f"--perturb: ppise's model was changed on purpose ({what}); rows below must FAIL"))

    pc_out, pp_out = forward_outputs(pc, ctx.batch), forward_outputs(pp, ctx.batch)
    n = ctx.batch.shape[0]
    for key in OUTPUT_KEYS:
        if key not in pc_out and key not in pp_out:
            continue
        if key == "logits" and skip:
            continue
        a, b = pc_out.get(key), pp_out.get(key)
        if a is None or b is None:
            rows.append(check_row(SECTION, f"{key} ({n} images, eval)", "absent" if a is None else describe_array(a),
                                  "absent" if b is None else describe_array(b), False))
            continue
        rows.append(compare_row(SECTION, f"{key} ({n} images, eval)", describe_array(a), describe_array(b),
                                max_abs_diff(a, b), FEATURE_TOL))
    checked = ctx.path("ppise_model.pdparams")
    paddle.save(pp.state_dict(), checked)
    return ModelResult(rows, checked, {"paddleclas": pc_out["features"], "ppise": pp_out["features"]}, pc_state)
