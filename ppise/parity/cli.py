"""Command line of ``tools/parity_check.py``."""
from __future__ import annotations

import argparse
import os
from typing import List, Optional

from .context import ParityOptions
from .runner import SECTIONS

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


def options_from_args(args: argparse.Namespace) -> ParityOptions:
    return ParityOptions(
        config=args.config, overrides=list(args.override), weights=args.weights, data=args.data,
        work_dir=os.path.abspath(args.work_dir) if args.work_dir else None,
        sections=[s.strip() for s in args.sections.split(",") if s.strip()], num_images=args.num_images,
        image_shape=args.image_shape, device=args.device, synthetic_ids=args.synthetic_ids,
        num_workers=args.num_workers, mkldnn=args.mkldnn, cpu_threads=args.cpu_threads,
        train_config=args.train_config, ppise_checkpoint=args.ppise_checkpoint, perturb=args.perturb,
        expect_market=args.expect_market, seed=args.seed)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    from ..utils.device import prepare_env

    prepare_env({"device": args.device})
    from .report import format_table, write_json
    from .runner import run_parity

    rows, ctx = run_parity(options_from_args(args))
    print(format_table(rows), flush=True)
    if args.json:
        write_json(rows, args.json, {"config": args.config, "weights": args.weights, "data": ctx.data_root})
    return 1 if any(r.failed for r in rows) else 0
