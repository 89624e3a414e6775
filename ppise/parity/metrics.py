"""Metrics parity: ppise's ``tools/eval.py -o Global.eval_protocol=paddleclas`` vs an
independent re-implementation of PaddleClas's retrieval evaluation (``metrics_reference``),
on the features ``tools/eval.py`` itself extracted and saved (``Global.save_features``).

Also checked: the saved features of the images the model section used equal the dygraph
features there (so the metrics are about the model that was checked), and, as NOTE rows,
the ``market`` protocol numbers of the same features, the protocol of the published
results (optionally held to ``--expect-market MAP RANK1``).
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import PpiseError
from .context import FEATURE_TOL, REPO_ROOT, ParityContext
from .model import ModelResult
from ..utils.arrays import l2_normalize
from .deploy import child_env, run_child
from .metrics_reference import paddleclas_retrieval_metrics
from .report import NOTE, Row, check_row, compare_row, describe_array, max_abs_diff

SECTION = "metrics"
METRIC_TOL = 1e-6
EXPECT_TOL = 0.5  # percentage points, for --expect-market
# reference key -> eval_metrics.json key
KEY_MAP = (("mAP", "mAP"), ("recall1", "rank1"), ("recall5", "rank5"), ("recall10", "rank10"),
           ("mINP", "mINP_upstream"))


def run_eval_tool(ctx: ParityContext, weights: str) -> Tuple[Dict[str, Any], str]:
    """``tools/eval.py`` on the resolved config and the checked weights; returns (metrics, features dir)."""
    feats_dir, out_dir = ctx.path("eval_features"), ctx.path("eval")
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "eval.py"), "-c", ctx.config_file(),
           "-o", f"Global.pretrained_model={weights}", "-o", "Global.eval_protocol=paddleclas",
           "-o", f"Global.save_features={feats_dir}", "-o", f"Global.output_dir={out_dir}"]
    run_child(cmd, child_env(ctx), "tools/eval.py", ctx.path("eval.log"))
    with open(os.path.join(out_dir, "eval_metrics.json"), encoding="utf-8") as f:
        return json.load(f), feats_dir


def load_features(feats_dir: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for part in ("query", "gallery"):
        for kind in ("feats", "ids", "cams"):
            out[f"{part}_{kind}"] = np.load(os.path.join(feats_dir, f"{part}_{kind}.npy"))
        with open(os.path.join(feats_dir, f"{part}_paths.txt"), encoding="utf-8") as f:
            out[f"{part}_paths"] = [line.strip() for line in f if line.strip()]
    return out


def _same(a: Optional[float], b: Optional[float]) -> float:
    """|a - b|, with two non-finite values (NaN/inf; JSON null) counting as equal."""
    fa = None if a is None else float(a)
    fb = None if b is None else float(b)
    bad_a = fa is None or not math.isfinite(fa)
    bad_b = fb is None or not math.isfinite(fb)
    if bad_a and bad_b:
        return 0.0
    if bad_a or bad_b:
        return float("inf")
    return abs(fa - fb)


def _fmt(v: Optional[float]) -> str:
    return "null" if v is None else f"{float(v):.7f}"


def run_metrics_section(ctx: ParityContext, model: ModelResult) -> List[Row]:
    rows: List[Row] = []
    ours, feats_dir = run_eval_tool(ctx, model.weights)
    f = load_features(feats_dir)
    block = int(ctx.cfg["Global"].get("sim_block_size", 64))
    ref = paddleclas_retrieval_metrics(f["query_feats"], f["gallery_feats"], f["query_ids"], f["gallery_ids"],
                                       f["query_cams"], f["gallery_cams"], topk=(1, 5, 10), block_size=block)
    nq, ng = len(f["query_ids"]), len(f["gallery_ids"])
    rows.append(Row(SECTION, "evaluation set", f"{nq} queries, {ng} gallery", f"block {block}", status=NOTE,
                    detail=f"tools/eval.py -o Global.eval_protocol=paddleclas on {ctx.data_root} vs "
                           f"ppise/parity/metrics_reference.py (PaddleClas retrieval.py + metrics.py, "
                           f"re-implemented) on the features eval.py saved; mINP_upstream is PaddleClas's formula "
                           f"(#hits / 0-based index of the last hit)"))
    for ref_key, our_key in KEY_MAP:
        rows.append(compare_row(SECTION, our_key,
                                _fmt(ref.get(ref_key)), _fmt(ours.get(our_key)), _same(ref.get(ref_key), ours.get(our_key)),
                                METRIC_TOL))
    rows += _feature_link(ctx, model, f)
    rows += _market_rows(ctx, f)
    return rows


def _feature_link(ctx: ParityContext, model: ModelResult, f: Dict[str, Any]) -> List[Row]:
    """eval.py's saved features of the checked images vs the model section's dygraph features."""
    index = {os.path.realpath(p): i for i, p in enumerate(f["query_paths"])}
    rows_idx = [index.get(os.path.realpath(p)) for p in ctx.image_paths]
    if any(i is None for i in rows_idx):
        return [check_row(SECTION, "eval.py features of the checked images", "", "images not among queries", False)]
    saved = np.asarray(f["query_feats"])[rows_idx]
    dy = l2_normalize(model.dygraph["ppise"])
    return [compare_row(SECTION, f"eval.py features vs dygraph ({len(rows_idx)} images)", "",
                        describe_array(saved), max_abs_diff(saved, dy), FEATURE_TOL)]


def _market_rows(ctx: ParityContext, f: Dict[str, Any]) -> List[Row]:
    from ..metric import evaluate

    try:
        m = evaluate(f["query_feats"], f["gallery_feats"], f["query_ids"], f["gallery_ids"], f["query_cams"],
                     f["gallery_cams"], protocol="market", topk=(1, 5, 10))
    except PpiseError as err:  # e.g. no query with a valid match: nothing to report, nothing to compare
        return [Row(SECTION, "market protocol (published numbers)", "", "n/a", status=NOTE, detail=str(err))]
    text = f"mAP {100 * m['mAP']:.2f}, rank-1 {100 * m['rank1']:.2f}"
    expect = ctx.options.expect_market
    if not expect:
        return [Row(SECTION, "market protocol (published numbers)", "", text, status=NOTE,
                    detail="the protocol of the published results (ISE_M on Market-1501: mAP 84.7, rank-1 94.0; "
                           "ISE_MS on MSMT17: 35.0 / 64.7); hold to them with --expect-market MAP RANK1")]
    rows = []
    for name, key, want in (("mAP", "mAP", expect[0]), ("rank-1", "rank1", expect[1])):
        got = 100 * m[key]
        rows.append(compare_row(SECTION, f"market {name} vs expected (points)", f"{want:.2f} expected", f"{got:.2f}",
                                abs(got - float(want)), EXPECT_TOL))
    return rows
