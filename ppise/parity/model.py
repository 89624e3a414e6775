"""Model parity: the RecModel paddleclas builds vs the one ppise builds, from one config.

Both get one weights file (``--weights``, else paddleclas's random init saved), paddleclas
loading it its own non-strict way, ppise strictly; then every output (backbone, neck,
features, logits) is compared in eval mode on the same preprocessed images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from .context import ParityContext
from .report import NOTE, Row, array_row, check_row, describe_array

SECTION = "model"
OUTPUT_KEYS = ("backbone", "neck", "features", "logits")


@dataclass(frozen=True)
class ModelResult:
    """The model section's rows and what the later sections compare against."""

    rows: List[Row]
    weights: Optional[str] = None  # ppise's state dict as checked (after any --perturb); None if it stopped early
    dygraph: Dict[str, np.ndarray] = field(default_factory=dict)  # "paddleclas" / "ppise" eval features [N, D]


def build_paddleclas_model(cfg: Dict[str, Any], arch: Optional[Dict[str, Any]] = None):
    """``paddleclas.ppcls.arch.build_model`` on ``arch`` (default: the config's); forwards set eval mode."""
    from paddleclas.ppcls.arch import build_model

    return build_model({"Arch": arch or cfg["Arch"], "Global": {"device": cfg["Global"]["device"]}}, mode="eval")


def randomize_batchnorm(model, batch: np.ndarray, seed: int) -> int:
    """Give every BN layer trained-looking, distinct tensors; returns the number of BN layers.

    At init BN is an identity, which would hide a BN tensor loaded into the wrong slot.
    Weight and bias are random; running statistics are scattered around the scale of each
    BN's actual input on ``batch`` (read by a pre-hook), so activations keep a trained-like
    scale and no channel is centred on these very images (which would inflate round-off).
    """
    import paddle

    rng = np.random.default_rng(seed)
    bns = [layer for _, layer in model.named_sublayers()
           if all(getattr(layer, a, None) is not None for a in ("_mean", "_variance", "weight"))]

    def set_stats(layer, inputs):
        x = inputs[0].numpy().astype(np.float64)
        n = int(layer._mean.shape[0])
        scale = float(np.mean(np.var(x, axis=tuple(i for i in range(x.ndim) if i != 1)))) + 1e-6
        layer._variance.set_value(paddle.to_tensor((scale * rng.uniform(0.5, 1.5, n)).astype(np.float32)))
        mean = float(np.mean(x)) + np.sqrt(scale) * rng.normal(0.0, 0.1, n)
        layer._mean.set_value(paddle.to_tensor(mean.astype(np.float32)))

    for layer in bns:
        n = int(layer._mean.shape[0])
        layer.weight.set_value(paddle.to_tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)))
        if getattr(layer, "bias", None) is not None:
            layer.bias.set_value(paddle.to_tensor(rng.normal(0.0, 0.1, n).astype(np.float32)))
    hooks = [layer.register_forward_pre_hook(set_stats) for layer in bns]
    try:
        forward_outputs(model, batch)
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


def key_report(file_state: Dict[str, Any], model_state: Dict[str, Any]) -> Dict[str, List]:
    """Strict comparison of a weights file with a model (state dicts)."""
    fs, ms = ({k: list(np.shape(v)) for k, v in state.items()} for state in (file_state, model_state))
    return {"missing": sorted(k for k in ms if k not in fs), "unexpected": sorted(k for k in fs if k not in ms),
            "mismatched": sorted(f"{k} {fs[k]} vs {ms[k]}" for k in ms if k in fs and fs[k] != ms[k])}


def report_text(rep: Dict[str, List]) -> str:
    return ", ".join(f"{len(v)} {k}" for k, v in rep.items())


def head_keys(keys: Iterable[str]) -> List[str]:
    return sorted(k for k in keys if k.startswith("head."))


def only_head_missing(rep: Dict[str, List], heads: List[str]) -> bool:
    return rep["missing"] == heads and not rep["unexpected"] and not rep["mismatched"]


def strict_load_row(section: str, item: str, model, path: str, paddleclas: str, loaded: str, **kw) -> Row:
    """``load_pretrained(strict=True)`` as a row: PASS with ``loaded`` (``{loaded}`` is the
    tensor count), or FAIL "refused" with the loader's message."""
    from ..utils.weights import load_pretrained

    try:
        rep = load_pretrained(model, path, strict=True, **kw)
    except ConfigError as err:
        return check_row(section, item, "", "refused", False, str(err))
    return check_row(section, item, paddleclas, loaded.format(loaded=rep["loaded"]), True)


def apply_perturbation(model, spec: str) -> str:
    """``--perturb NAME[=DELTA]``, a self-test: add DELTA (default 0.01) to element 0 of tensor NAME."""
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


def _weights_row(ctx: ParityContext, pc) -> Tuple[str, Dict[str, Any], Row]:
    """``(path, file state, row)``: ``--weights`` into paddleclas, or its random init saved."""
    import paddle
    from paddleclas.ppcls.utils.save_load import load_dygraph_pretrain

    from ..utils.weights import resolve_weights_path

    if not ctx.args.weights:
        n_bn = randomize_batchnorm(pc, ctx.batch, ctx.args.seed)
        path = ctx.path("paddleclas_init.pdparams")
        paddle.save(pc.state_dict(), path)
        return path, pc.state_dict(), Row(
            SECTION, "weights", "random init saved", "", status=NOTE,
            detail=f"no --weights: paddleclas's random initialisation saved to {path}, its {n_bn} BatchNorm "
                   "layers given random weight/bias and running statistics scattered around the scale of their "
                   "input (at init BN is an identity, which would hide a misplaced BN tensor)")
    path = resolve_weights_path(ctx.args.weights, "--weights")
    state = paddle.load(path)
    rep = key_report(state, pc.state_dict())
    load_dygraph_pretrain(pc, path)
    heads = head_keys(rep["missing"])
    ok = only_head_missing(rep, heads)
    detail = (f"{path} has no {', '.join(heads)}: the config's Head is not in the weights file; paddleclas "
              "keeps its random head, ppise skips head.* (logits are not compared)") if heads and ok else ""
    return path, state, check_row(SECTION, "weights -> paddleclas RecModel", report_text(rep), "", ok, detail)


def run_model_section(ctx: ParityContext) -> ModelResult:
    import paddle

    from ..arch import build_model

    paddle.seed(ctx.args.seed)
    pc = build_paddleclas_model(ctx.cfg)
    weights, file_state, row = _weights_row(ctx, pc)
    rows = [row]
    pp = build_model(ctx.cfg["Arch"], skip_backbone_pretrained=True)
    skip = ("head.",) if head_keys(pp.state_dict()) and not head_keys(file_state) else ()
    rows.append(strict_load_row(SECTION, "weights -> ppise RecModel (strict)", pp, weights, "",
                                "{loaded} tensors, 0 missing, 0 unexpected, 0 shape"
                                + (" (head.* skipped)" if skip else ""), skip_prefixes=skip, config_key="--weights"))
    if rows[-1].failed:
        return ModelResult(rows)
    rep = key_report(pc.state_dict(), pp.state_dict())
    diff_keys = sorted(rep["missing"] + rep["unexpected"]) + [m.split()[0] for m in rep["mismatched"]]
    rows.append(check_row(SECTION, "state-dict keys and shapes", f"{len(pc.state_dict())} tensors",
                          f"{len(pp.state_dict())} tensors", not diff_keys,
                          f"differing keys: {', '.join(diff_keys[:8])}" if diff_keys else ""))
    if ctx.args.perturb:
        what = apply_perturbation(pp, ctx.args.perturb)
        rows.append(Row(SECTION, "perturbation (self-test)", "", what, status=NOTE,
                        detail=f"--perturb: ppise's model was changed on purpose ({what}); rows below must FAIL"))

    pc_out, pp_out = forward_outputs(pc, ctx.batch), forward_outputs(pp, ctx.batch)
    n = ctx.batch.shape[0]
    for key in OUTPUT_KEYS:
        if (key not in pc_out and key not in pp_out) or (key == "logits" and skip):
            continue
        a, b = pc_out.get(key), pp_out.get(key)
        if a is None or b is None:
            rows.append(check_row(SECTION, f"{key} ({n} images, eval)", "absent" if a is None else describe_array(a),
                                  "absent" if b is None else describe_array(b), False))
            continue
        rows.append(array_row(SECTION, f"{key} ({n} images, eval)", a, b))
    checked = ctx.path("ppise_model.pdparams")
    paddle.save(pp.state_dict(), checked)
    return ModelResult(rows, checked, {"paddleclas": pc_out["features"], "ppise": pp_out["features"]})
