"""Search a gallery: query image(s) -> top-k hits with scores as JSON on stdout.

    python deploy/python/search.py -c deploy/configs/inference_rec.yaml -o Global.infer_imgs=QUERY \
        [--topk 10] [--vis out.png [--vis-max 50]] [--eval]

QUERY: any image, folder or list file; ids are read from Market-style names when present.
--vis draws each query beside its ranked hits (green: same person from another camera,
orange: same person, same camera, red: another one), at most --vis-max queries a picture
(more give out_001.png, out_002.png, ...).
--eval: QUERY is a query folder in Market naming; prints mAP / CMC / mINP (market protocol).
Unreadable images are listed on stderr and in the JSON ("skipped") and left out.
"""
from __future__ import annotations

from typing import List, Optional

import _common


def main(argv: Optional[List[str]] = None) -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("-k", "--topk", type=int, default=None, help="hits per query (default IndexProcess.return_k)")
    p.add_argument("--vis", default=None, metavar="PNG", help="write a picture of the ranked hits")
    p.add_argument("--vis-max", type=int, default=50, metavar="N", help="queries per picture (more: several files)")
    p.add_argument("--eval", action="store_true", help="mAP/CMC over the query set (Market naming)")
    p.add_argument("--protocol", default="market", choices=("market", "paddleclas"), help="metric protocol for --eval")
    p.add_argument("--metrics-only", action="store_true", help="with --eval, leave the per-query hits out of the JSON")
    args = p.parse_args(argv)
    cfg = _common.load(args)
    from ppise.deploy.pipeline import dumps, search_queries

    out = search_queries(cfg, k=args.topk, vis=args.vis, evaluate=args.eval, protocol=args.protocol,
                         vis_max=args.vis_max)
    if args.metrics_only and args.eval:
        out.pop("results")
    print(dumps(out))
    return 0


if __name__ == "__main__":
    from ppise.utils.cli import run_tool

    run_tool(main)
