"""Round trip: a ppise ISE checkpoint in PaddleClas's RecModel, and PaddleClas weights in ppise's
ISE model, both loaded strictly and compared on features.

The head question, answered on purpose. PaddleClas's official config has ``Head: FC
(class_num 751)``, a supervised classifier; ISE training has no classifier (its supports,
``Loss.Train: - ISESupport``, have no parameters and live in the objective), so a ppise ISE checkpoint holds
``backbone.*`` and ``neck.*`` only. Retrieval never uses the head
(``infer_output_key: features``). So the strict comparison is made on the official
config's **inference branch** (backbone + stop layer + neck, ``Head`` removed), where it must
be exact, and the full official Arch gets its own row that passes only if the *sole*
difference is the head's tensors, named in the table. Nothing is skipped silently.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

from ..config import get_config
from ..errors import ConfigError
from .context import FEATURE_TOL, REPO_ROOT, ParityContext, arch_without_head
from .model import (ModelResult, build_paddleclas_model, build_ppise_model, forward_outputs, head_keys, is_clean, key_report,
                    randomize_batchnorm, report_text, shapes)
from .report import NOTE, Row, check_row, compare_row, describe_array, max_abs_diff

SECTION = "roundtrip"
DEFAULT_TRAIN_CONFIG = os.path.join(REPO_ROOT, "configs", "ise_market.yaml")


def ise_arch(ctx: ParityContext) -> tuple:
    """``(arch, source)``: the Arch of ppise's ISE training config."""
    path = ctx.options.train_config or DEFAULT_TRAIN_CONFIG
    cfg = get_config(path)
    arch = cfg.get("Arch")
    if not isinstance(arch, dict):
        raise ConfigError(f"{path}: no Arch section to build the ppise ISE model from (--train-config)")
    return arch, path


def ppise_checkpoint(ctx: ParityContext, model) -> tuple:
    """``(path, note)``: ``--ppise-checkpoint`` or a fresh one written by ppise's checkpoint writer."""
    if ctx.options.ppise_checkpoint:
        from ..utils.weights import resolve_weights_path

        return resolve_weights_path(ctx.options.ppise_checkpoint, "--ppise-checkpoint"), "given"
    from ..utils.checkpoint import save_checkpoint

    randomize_batchnorm(model, ctx.batch, ctx.options.seed + 1)
    base = save_checkpoint(ctx.path("ppise_run"), "latest", model.state_dict(), states={"epoch": 0})
    return base + ".pdparams", "written"


def _features_row(ctx: ParityContext, item: str, paddleclas_feats, pp_model) -> Row:
    """The paddleclas features against ``pp_model``'s on the same images."""
    a, b = paddleclas_feats, forward_outputs(pp_model, ctx.batch)["features"]
    return compare_row(SECTION, f"features, {item} ({len(a)} images)", describe_array(a), describe_array(b),
                       max_abs_diff(a, b), FEATURE_TOL)


def _strict_into_paddleclas(file_state: Dict[str, Any], model) -> Dict[str, List]:
    import warnings

    rep = key_report(file_state, model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.set_state_dict(file_state)
    return rep


def ppise_to_paddleclas(ctx: ParityContext, model: ModelResult, arch: Dict[str, Any]) -> List[Row]:
    import paddle

    from ..utils.weights import load_pretrained

    rows: List[Row] = []
    pp = build_ppise_model(arch, where="Arch (--train-config)")
    path, how = ppise_checkpoint(ctx, pp)
    state = paddle.load(path)
    load_pretrained(pp, path, strict=True, config_key="--ppise-checkpoint")
    pc = build_paddleclas_model(ctx.cfg, arch_without_head(ctx.cfg["Arch"]))
    rep = _strict_into_paddleclas(state, pc)
    rows.append(check_row(SECTION, "ppise ISE ckpt -> paddleclas RecModel, inference branch (strict)",
                          report_text(rep), f"{len(state)} tensors ({how})", is_clean(rep),
                          f"checkpoint {path}; PaddleClas RecModel from {ctx.options.config} without Head"))
    full_shapes = model.paddleclas_shapes or shapes(build_paddleclas_model(ctx.cfg).state_dict())
    rep_full = key_report(state, full_shapes)
    heads = head_keys(full_shapes)
    only_head = rep_full["missing"] == heads and not rep_full["unexpected"] and not rep_full["mismatched"]
    head_shapes = ", ".join(f"{k} {list(v)}" for k, v in full_shapes.items() if k in heads)
    rows.append(check_row(SECTION, "ppise ISE ckpt -> full official Arch (with Head)", report_text(rep_full),
                          "no head tensors", only_head or is_clean(rep_full),
                          f"the only tensors the checkpoint lacks are the official Head's ({head_shapes}): the "
                          f"supervised classifier, absent from unsupervised ISE training and unused by retrieval "
                          f"(infer_output_key: features)" if heads else ""))
    rows.append(_features_row(ctx, "ppise ISE model vs paddleclas", forward_outputs(pc, ctx.batch)["features"], pp))
    return rows


def paddleclas_to_ppise(ctx: ParityContext, arch: Dict[str, Any]) -> List[Row]:
    import paddle

    from ..utils.weights import load_pretrained

    rows: List[Row] = []
    pc = build_paddleclas_model(ctx.cfg)
    randomize_batchnorm(pc, ctx.batch, ctx.options.seed + 2)
    full_path, branch_path = ctx.path("paddleclas_full.pdparams"), ctx.path("paddleclas_branch.pdparams")
    full_state = pc.state_dict()
    heads = head_keys(full_state)
    paddle.save(full_state, full_path)
    paddle.save({k: v for k, v in full_state.items() if k not in heads}, branch_path)
    pp = build_ppise_model(arch, where="Arch (--train-config)")
    if heads:  # strict refusal happens before any tensor is set, so the same model is reused below
        try:
            load_pretrained(pp, full_path, strict=True, config_key="paddleclas weights")
            ok, text = False, "accepted the head"  # an ISE model has no head tensors: strict must refuse
        except ConfigError as err:
            ok = all(k in str(err) for k in heads[:2]) and "unexpected" in str(err)
            text = f"refused: {len(heads)} unexpected head.*"
        rows.append(check_row(SECTION, "paddleclas full weights -> ppise ISE model (strict)", f"{len(full_state)} tensors",
                              text, ok, "strict loading names the official Head's tensors as unexpected; "
                              "load_pretrained(..., skip_prefixes=('head.',)) drops them explicitly"))
        if not ok:
            pp = build_ppise_model(arch, where="Arch (--train-config)")
    try:
        rep = load_pretrained(pp, branch_path, strict=True, config_key="paddleclas weights")
        rows.append(check_row(SECTION, "paddleclas inference branch -> ppise ISE model (strict)",
                              f"{len(full_state) - len(heads)} tensors", f"{rep['loaded']} loaded, 0 missing/unexpected",
                              True))
    except ConfigError as err:
        rows.append(check_row(SECTION, "paddleclas inference branch -> ppise ISE model (strict)", "", "refused", False,
                              str(err)))
        return rows
    rows.append(_features_row(ctx, "paddleclas vs ppise ISE model", forward_outputs(pc, ctx.batch)["features"], pp))
    return rows


def release_weights_into_ise(ctx: ParityContext, model: ModelResult, arch: Dict[str, Any]) -> List[Row]:
    """With ``--weights``: the released file in ppise's ISE model, strict apart from a named head."""
    from ..utils.weights import load_pretrained, resolve_weights_path
    import paddle

    path = resolve_weights_path(ctx.options.weights, "--weights")
    heads = head_keys(paddle.load(path).keys())
    pp = build_ppise_model(arch, where="Arch (--train-config)")
    try:
        load_pretrained(pp, path, strict=True, skip_prefixes=("head.",) if heads else (), config_key="--weights")
    except ConfigError as err:
        return [check_row(SECTION, "--weights -> ppise ISE model (strict)", "", "refused", False, str(err))]
    rows = [check_row(SECTION, "--weights -> ppise ISE model (strict)", f"{len(heads)} head tensors in file",
                      "loaded" + (" (head.* dropped)" if heads else ""), True)]
    if "paddleclas" in model.dygraph:
        rows.append(_features_row(ctx, "--weights: paddleclas vs ppise ISE", model.dygraph["paddleclas"], pp))
    return rows


def run_roundtrip_section(ctx: ParityContext, model: ModelResult) -> List[Row]:
    arch, source = ise_arch(ctx)
    rows = [Row(SECTION, "ppise ISE model", "", f"Arch of {os.path.relpath(source)}", status=NOTE,
                detail=f"ppise side built from {source} (Head {arch.get('Head', {}).get('name')}); PaddleClas side from "
                       f"{ctx.options.config}")]
    rows += ppise_to_paddleclas(ctx, model, arch)
    rows += paddleclas_to_ppise(ctx, arch)
    if ctx.options.weights:
        rows += release_weights_into_ise(ctx, model, arch)
    return rows
