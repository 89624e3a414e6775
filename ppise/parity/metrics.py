"""Metrics parity: ``tools/eval.py -o Global.eval_protocol=paddleclas`` vs the independent
``metrics_reference`` on the features eval.py saved (which must equal the model section's),
plus the ``market`` protocol numbers, as NOTE rows or held to ``--expect-market``.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional

import numpy as np

from ..config import dump
from ..errors import PpiseError
from ..utils.arrays import l2_normalize
from .context import REPO_ROOT, ParityContext
from .deploy import run_child
from .metrics_reference import paddleclas_retrieval_metrics
from .model import ModelResult
from .report import NOTE, Row, array_row, check_row, compare_row, describe_array

SECTION = "metrics"
METRIC_TOL = 1e-6
EXPECT_TOL = 0.5  # percentage points, for --expect-market
# reference key -> eval_metrics.json key
KEY_MAP = (("mAP", "mAP"), ("recall1", "rank1"), ("recall5", "rank5"), ("recall10", "rank10"),
           ("mINP", "mINP_upstream"))


def run_eval_tool(ctx: ParityContext, weights: str) -> Dict[str, Any]:
    """``tools/eval.py`` on the resolved config and checked weights: its metrics and saved features."""
    cfg_path, feats_dir, out_dir = ctx.path("parity_config.yaml"), ctx.path("eval_features"), ctx.path("eval")
    with open(cfg_path, "w", encoding="utf-8") as f:
        f.write(dump(ctx.cfg))
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "eval.py"), "-c", cfg_path,
           "-o", f"Global.pretrained_model={weights}", "-o", "Global.eval_protocol=paddleclas",
           "-o", f"Global.save_features={feats_dir}", "-o", f"Global.output_dir={out_dir}"]
    run_child(ctx, cmd, "tools/eval.py", "eval.log")
    with open(os.path.join(out_dir, "eval_metrics.json"), encoding="utf-8") as f:
        out = {"metrics": json.load(f)}
    for part in ("query", "gallery"):
        for kind in ("feats", "ids", "cams"):
            out[f"{part}_{kind}"] = np.load(os.path.join(feats_dir, f"{part}_{kind}.npy"))
        with open(os.path.join(feats_dir, f"{part}_paths.txt"), encoding="utf-8") as f:
            out[f"{part}_paths"] = [line.strip() for line in f if line.strip()]
    return out


def _diff(a: Optional[float], b: Optional[float]) -> float:
    """|a - b|, with two non-finite values (NaN/inf; JSON null) counting as equal."""
    bad = [v is None or not math.isfinite(float(v)) for v in (a, b)]
    if any(bad):
        return 0.0 if all(bad) else float("inf")
    return abs(float(a) - float(b))


def _fmt(v: Optional[float]) -> str:
    return "null" if v is None else f"{float(v):.7f}"


def run_metrics_section(ctx: ParityContext, model: ModelResult) -> List[Row]:
    f = run_eval_tool(ctx, model.weights)
    ours = f["metrics"]
    feats = [f[k] for k in ("query_feats", "gallery_feats", "query_ids", "gallery_ids", "query_cams", "gallery_cams")]
    block = int(ctx.cfg["Global"].get("sim_block_size", 64))
    ref = paddleclas_retrieval_metrics(*feats, topk=(1, 5, 10), block_size=block)
    nq, ng = len(f["query_ids"]), len(f["gallery_ids"])
    rows = [Row(SECTION, "evaluation set", f"{nq} queries, {ng} gallery", f"block {block}", status=NOTE,
                detail=f"tools/eval.py -o Global.eval_protocol=paddleclas on {ctx.data_root} vs "
                       f"ppise/parity/metrics_reference.py (PaddleClas retrieval.py + metrics.py, "
                       f"re-implemented) on the features eval.py saved; mINP_upstream is PaddleClas's formula "
                       f"(#hits / 0-based index of the last hit)")]
    for ref_key, our_key in KEY_MAP:
        a, b = ref.get(ref_key), ours.get(our_key)
        rows.append(compare_row(SECTION, our_key, _fmt(a), _fmt(b), _diff(a, b), METRIC_TOL))

    # eval.py's saved features of the checked images vs the model section's dygraph features
    index = {os.path.realpath(p): i for i, p in enumerate(f["query_paths"])}
    rows_idx = [index.get(os.path.realpath(p)) for p in ctx.image_paths]
    if any(i is None for i in rows_idx):
        rows.append(check_row(SECTION, "eval.py features of the checked images", "", "images not among queries",
                              False))
    else:
        saved = np.asarray(f["query_feats"])[rows_idx]
        rows.append(array_row(SECTION, f"eval.py features vs dygraph ({len(rows_idx)} images)", saved,
                              l2_normalize(model.dygraph["ppise"]), "", describe_array(saved)))
    return rows + _market_rows(ctx, feats)


def _market_rows(ctx: ParityContext, feats: List[np.ndarray]) -> List[Row]:
    from ..metric import evaluate

    item = "market protocol (published numbers)"
    try:
        m = evaluate(*feats, protocol="market", topk=(1, 5, 10))
    except PpiseError as err:  # e.g. no query with a valid match: nothing to report, nothing to compare
        return [Row(SECTION, item, "", "n/a", status=NOTE, detail=str(err))]
    expect = ctx.args.expect_market
    if not expect:
        return [Row(SECTION, item, "", f"mAP {100 * m['mAP']:.2f}, rank-1 {100 * m['rank1']:.2f}", status=NOTE,
                    detail="the protocol of the published results (ISE_M on Market-1501: mAP 84.7, rank-1 94.0; "
                           "ISE_MS on MSMT17: 35.0 / 64.7); hold to them with --expect-market MAP RANK1")]
    rows = []
    for name, key, want in (("mAP", "mAP", expect[0]), ("rank-1", "rank1", expect[1])):
        got = 100 * m[key]
        rows.append(compare_row(SECTION, f"market {name} vs expected (points)", f"{want:.2f} expected",
                                f"{got:.2f}", abs(got - float(want)), EXPECT_TOL))
    return rows
