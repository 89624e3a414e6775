"""Command line of ``tools/parity_check.py``: run the sections, print the table.

``model`` always runs first; its ``ModelResult`` goes to every later section. A section that
crashes becomes a FAIL row and the others still run; user mistakes found before any work (bad
config, missing weights) are raised as ppise errors instead.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from typing import Any, Callable, List, Optional, Tuple

from ..errors import ConfigError, PpiseError
from ..utils.logger import logger
from .report import Row, error_row, format_table, write_json

SECTIONS = ("model", "deploy", "metrics", "roundtrip")
DESCRIPTION = ("Check that ppise matches PaddleClas on one config: model features, deploy (PaddleClas's "
               "RecPredictor, ppise's predict_rec.py, dygraph), retrieval metrics and checkpoint round trip. "
               "Prints a table and exits 1 on any FAIL.")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION)
    p.add_argument("-c", "--config", required=True, help="PaddleClas/ppise YAML config (e.g. ResNet50_UReID_infer.yaml)")
    p.add_argument("-o", "--override", action="append", default=[], help="config override Section.key=value (repeatable)")
    p.add_argument("--weights", help=".pdparams both sides load (e.g. ISE_M_model.pdparams); default: paddleclas's "
                                     "random initialisation")
    p.add_argument("--data", help="dataset image_root (holding market1501/Market-1501-v15.09.15 or msmt17/MSMT17_V1); "
                                  "default: a small synthetic Market-format set in the work dir")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {','.join(SECTIONS)} (model always runs)")
    p.add_argument("--num-images", type=int, default=4, help="query images for the model/deploy comparisons")
    p.add_argument("--image-shape", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="evaluate at this input size instead of the config's (both sides; e.g. 3 64 32 for quick CI)")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--synthetic-ids", type=int, default=12, help="identities of the generated synthetic set")
    p.add_argument("--num-workers", type=int, help="override every DataLoader loader.num_workers")
    p.add_argument("--no-mkldnn", dest="mkldnn", action="store_false", help="run both predictors without oneDNN")
    p.add_argument("--cpu-threads", type=int, default=2, help="threads of both Paddle Inference predictors")
    p.add_argument("--train-config", help="ppise ISE training config for the round trip (default configs/ise_market.yaml)")
    p.add_argument("--ppise-checkpoint", help="a .pdparams written by ppise training for the round trip "
                                              "(default: one written now by ppise's checkpoint writer)")
    p.add_argument("--expect-market", type=float, nargs=2, metavar=("MAP", "RANK1"),
                   help="market-protocol results to hold the weights to, in percent (+-0.5), e.g. 84.7 94.0")
    p.add_argument("--perturb", metavar="NAME[=DELTA]", help="self-test: change one element of ppise's tensor NAME "
                                                              "after loading; the check must then FAIL")
    p.add_argument("--work-dir", help="keep every artifact here (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument("--seed", type=int, default=0)
    return p


def _attempt(name: str, fn: Callable[[], Any]) -> Tuple[Any, Optional[Row]]:
    """``(fn(), None)``, or ``(None, FAIL row)`` when it raised: one section never stops the table."""
    start = time.time()
    try:
        return fn(), None
    except Exception as err:  # noqa: BLE001 - reported as a FAIL row, the table stays whole
        logger.exception(f"parity section {name} failed")
        return None, error_row(name, err)
    finally:
        logger.info(f"parity section {name}: {time.time() - start:.1f}s")


def run_sections(ctx) -> List[Row]:
    from .deploy import run_deploy_section
    from .metrics import run_metrics_section
    from .model import run_model_section
    from .roundtrip import run_roundtrip_section

    later = {"deploy": run_deploy_section, "metrics": run_metrics_section, "roundtrip": run_roundtrip_section}
    wanted = ctx.args.sections
    model, failure = _attempt("model", lambda: run_model_section(ctx))
    rows = [failure] if failure else model.rows
    if "model" not in wanted:
        rows = [r for r in rows if r.failed]  # it runs for the others; shown only when it fails
    for name in (s for s in later if s in wanted):
        if model is None or model.weights is None:
            rows.append(error_row(name, PpiseError("needs the weights the model section checks, which it did not "
                                                   "write (see its rows)")))
            continue
        got, failure = _attempt(name, lambda: later[name](ctx, model))
        rows += [failure] if failure else got
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not args.sections or any(s not in SECTIONS for s in args.sections):
        raise ConfigError(f"--sections {','.join(args.sections)}: choose from {','.join(SECTIONS)}")
    args.work_dir = os.path.abspath(args.work_dir) if args.work_dir else None
    from ..utils.device import prepare_env, setup_device
    from ..utils.weights import resolve_weights_path
    from .context import build_context

    prepare_env({"device": args.device})
    if args.weights:
        resolve_weights_path(args.weights, "--weights")
    ctx, rows = build_context(args)
    setup_device(ctx.cfg["Global"])
    try:
        rows += run_sections(ctx)
    finally:
        if not args.work_dir and not any(r.failed for r in rows):
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
        elif not args.work_dir:
            logger.info(f"parity artifacts (logs, features, exported model) kept in {ctx.work_dir}")
    print(format_table(rows), flush=True)
    if args.json:
        write_json(rows, args.json, {"config": args.config, "weights": args.weights, "data": ctx.data_root})
    return 1 if any(r.failed for r in rows) else 0
