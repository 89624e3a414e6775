"""Write a synthetic Market-1501 (layout, naming, 64x128 JPEGs) for CPU development and CI.

Usage:
    python tools/make_synthetic_reid.py --out DIR --ids 100 --seed 0 [--images-per-id 12 20]
    python tools/make_synthetic_reid.py --out DIR --ids 200 --source   # labelled source for pre-training

The images land in DIR/market1501/Market-1501-v15.09.15/{bounding_box_train,bounding_box_test,query};
the summary (counts, dataset root, seconds) is printed as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from synthreid import make_source_set, make_synthetic_reid  # noqa: E402
from ppise.errors import PpiseError  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="image root; the set goes to OUT/market1501/Market-1501-v15.09.15")
    p.add_argument("--ids", type=int, default=100, help="identities in total, half train and half test (2..1501)")
    p.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files")
    p.add_argument("--images-per-id", type=int, nargs="+", metavar="N", default=None,
                   help="images per identity: one value, or MIN MAX (default 12 20)")
    p.add_argument("--cams-per-id", type=int, nargs="+", metavar="N", default=None,
                   help="cameras per identity: one value, or MIN MAX in 2..6 (default 2 6)")
    p.add_argument("--distractor-ratio", type=float, default=None, help="id-0000 images per true gallery image")
    p.add_argument("--junk-ratio", type=float, default=None, help="id -1 images per true gallery image")
    p.add_argument("--lookalike-prob", type=float, default=None, help="chance of a group sharing one shirt")
    p.add_argument("--occlusion-prob", type=float, default=None)
    p.add_argument("--crowd-prob", type=float, default=None)
    p.add_argument("--camera-strength", type=float, default=None, help="0 = cameras alike, 1 = default")
    p.add_argument("--id-offset", type=int, default=None, help="identity numbers start at OFFSET+1 (default 0)")
    p.add_argument("--train-fraction", type=float, default=None, help="share of identities in bounding_box_train (0.5)")
    p.add_argument("--source", action="store_true",
                   help="a labelled source set for pre-training: seed 1000+SEED, ids from 1001, 80%% train")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synthetic set at --out")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    keys = ("images_per_id", "cams_per_id", "distractor_ratio", "junk_ratio", "lookalike_prob",
            "occlusion_prob", "crowd_prob", "camera_strength", "id_offset", "train_fraction")
    options = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    try:
        make = make_source_set if args.source else make_synthetic_reid
        summary = make(args.out, num_ids=args.ids, seed=args.seed, overwrite=args.overwrite, **options)
    except PpiseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
