"""Round trip: a ppise ISE checkpoint in PaddleClas's RecModel, and PaddleClas weights in ppise's
ISE model, both loaded strictly and compared on features.

The official config has ``Head: FC (class_num 751)``, a supervised classifier; ISE training has
none (its supports have no parameters) and retrieval never uses it. So the strict check is made
on the official **inference branch** (``Head`` removed), and the full official Arch gets a row
that passes only if the head's tensors, named in the table, are the sole difference.
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Callable, List

from ..config import get_config
from ..errors import ConfigError
from .context import REPO_ROOT, ParityContext
from .model import (ModelResult, build_paddleclas_model, forward_outputs, head_keys, key_report, only_head_missing,
                    randomize_batchnorm, report_text, strict_load_row)
from .report import NOTE, Row, array_row, check_row

SECTION = "roundtrip"
DEFAULT_TRAIN_CONFIG = os.path.join(REPO_ROOT, "configs", "ise_market.yaml")


def _features_row(ctx: ParityContext, item: str, paddleclas_feats, pp_model) -> Row:
    return array_row(SECTION, f"features, {item} ({len(paddleclas_feats)} images)", paddleclas_feats,
                     forward_outputs(pp_model, ctx.batch)["features"])


def ppise_to_paddleclas(ctx: ParityContext, build_ise: Callable, pc_full) -> List[Row]:
    """``--ppise-checkpoint`` (or one ppise's checkpoint writer writes now) into PaddleClas."""
    import paddle

    from ..utils.checkpoint import save_checkpoint
    from ..utils.weights import load_pretrained, resolve_weights_path

    pp = build_ise()
    if ctx.args.ppise_checkpoint:
        path, how = resolve_weights_path(ctx.args.ppise_checkpoint, "--ppise-checkpoint"), "given"
    else:
        randomize_batchnorm(pp, ctx.batch, ctx.args.seed + 1)
        base = save_checkpoint(ctx.path("ppise_run"), "latest", pp.state_dict(), states={"epoch": 0})
        path, how = base + ".pdparams", "written"
    state = paddle.load(path)
    load_pretrained(pp, path, strict=True, config_key="--ppise-checkpoint")
    pc = build_paddleclas_model(ctx.cfg, {k: v for k, v in ctx.cfg["Arch"].items() if k != "Head"})
    rep = key_report(state, pc.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pc.set_state_dict(state)
    rows = [check_row(SECTION, "ppise ISE ckpt -> paddleclas RecModel, inference branch (strict)",
                      report_text(rep), f"{len(state)} tensors ({how})", not any(rep.values()),
                      f"checkpoint {path}; PaddleClas RecModel from {ctx.args.config} without Head")]
    full_state = pc_full.state_dict()
    rep_full, heads = key_report(state, full_state), head_keys(full_state)
    head_shapes = ", ".join(f"{k} {list(full_state[k].shape)}" for k in full_state if k in heads)
    rows.append(check_row(SECTION, "ppise ISE ckpt -> full official Arch (with Head)", report_text(rep_full),
                          "no head tensors", only_head_missing(rep_full, heads) or not any(rep_full.values()),
                          f"the only tensors the checkpoint lacks are the official Head's ({head_shapes}): the "
                          f"supervised classifier, absent from unsupervised ISE training and unused by retrieval "
                          f"(infer_output_key: features)" if heads else ""))
    rows.append(_features_row(ctx, "ppise ISE model vs paddleclas", forward_outputs(pc, ctx.batch)["features"], pp))
    return rows


def paddleclas_to_ppise(ctx: ParityContext, build_ise: Callable, pc) -> List[Row]:
    """PaddleClas weights (BN randomised) into the ISE model: the full file refused, the branch loaded."""
    import paddle

    from ..utils.weights import load_pretrained

    randomize_batchnorm(pc, ctx.batch, ctx.args.seed + 2)
    full_path, branch_path = ctx.path("paddleclas_full.pdparams"), ctx.path("paddleclas_branch.pdparams")
    full_state = pc.state_dict()
    heads = head_keys(full_state)
    paddle.save(full_state, full_path)
    paddle.save({k: v for k, v in full_state.items() if k not in heads}, branch_path)
    rows: List[Row] = []
    pp = build_ise()
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
            pp = build_ise()
    rows.append(strict_load_row(SECTION, "paddleclas inference branch -> ppise ISE model (strict)", pp, branch_path,
                                f"{len(full_state) - len(heads)} tensors", "{loaded} loaded, 0 missing/unexpected",
                                config_key="paddleclas weights"))
    if not rows[-1].failed:
        rows.append(_features_row(ctx, "paddleclas vs ppise ISE model", forward_outputs(pc, ctx.batch)["features"], pp))
    return rows


def run_roundtrip_section(ctx: ParityContext, model: ModelResult) -> List[Row]:
    import paddle

    from ..arch import build_model
    from ..utils.weights import resolve_weights_path

    source = ctx.args.train_config or DEFAULT_TRAIN_CONFIG
    arch = get_config(source).get("Arch")
    if not isinstance(arch, dict):
        raise ConfigError(f"{source}: no Arch section to build the ppise ISE model from (--train-config)")
    build_ise = functools.partial(build_model, arch, where="Arch (--train-config)",
                                  skip_backbone_pretrained=True)
    rows = [Row(SECTION, "ppise ISE model", "", f"Arch of {os.path.relpath(source)}", status=NOTE,
                detail=f"ppise side built from {source} (Head {arch.get('Head', {}).get('name')}); PaddleClas side from "
                       f"{ctx.args.config}")]
    pc_full = build_paddleclas_model(ctx.cfg)
    rows += ppise_to_paddleclas(ctx, build_ise, pc_full)
    rows += paddleclas_to_ppise(ctx, build_ise, pc_full)
    if ctx.args.weights:  # the released file in ppise's ISE model, strict apart from a named head
        path = resolve_weights_path(ctx.args.weights, "--weights")
        heads = head_keys(paddle.load(path).keys())
        pp = build_ise()
        loaded = "loaded" + (" (head.* dropped)" if heads else "")
        rows.append(strict_load_row(SECTION, "--weights -> ppise ISE model (strict)", pp, path,
                                    f"{len(heads)} head tensors in file", loaded,
                                    skip_prefixes=("head.",) if heads else (), config_key="--weights"))
        if not rows[-1].failed:
            rows.append(_features_row(ctx, "--weights: paddleclas vs ppise ISE", model.dygraph["paddleclas"], pp))
    return rows
