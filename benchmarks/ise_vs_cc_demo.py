"""ISE versus the cluster-contrast baseline on the demo data, same budget, several seeds.

Runs ``configs/ise_demo.yaml`` and ``configs/cc_demo.yaml`` (identical but for the ISE head
and the LP loss) for each seed, two runs at a time with one thread each, and prints a table
of final mAP and the last epoch's clustering errors (mixed clusters, sub identities).

    python benchmarks/ise_vs_cc_demo.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def run(config: str, seed: int, out_root: str, extra: List[str]) -> Dict:
    name = os.path.splitext(os.path.basename(config))[0]
    out = os.path.join(out_root, f"{name}_seed{seed}")
    cmd = [sys.executable, os.path.join(ROOT, "tools/train.py"), "-c", os.path.join(ROOT, config),
           "-o", f"Global.seed={seed}", "-o", f"Global.output_dir={out}", "-o", "Global.overwrite=True",
           "-o", "Global.cpu_threads=1"] + sum((["-o", e] for e in extra), [])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed:\n{proc.stderr[-2000:]}")
    with open(os.path.join(out, "train_log.jsonl")) as f:
        log = [json.loads(line) for line in f if line.strip()]
    last = log[-1]
    return {"config": name, "seed": seed, "mAP": last["mAP"], "rank1": last["rank1"], "mixed": last.get("mixed_clusters"),
            "sub": last.get("sub_identities"), "ari": last.get("ari"), "seconds": sum(r["train_seconds"] + r["cluster_seconds"] for r in log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=os.path.join(ROOT, "output", "ise_vs_cc"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-o", "--override", action="append", default=[])
    args = parser.parse_args()
    tasks = [(cfg, seed) for seed in args.seeds for cfg in ("configs/cc_demo.yaml", "configs/ise_demo.yaml")]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda t: run(t[0], t[1], args.out, args.override), tasks))
    by = {(r["config"], r["seed"]): r for r in results}
    print(f"{'seed':>4} | {'cc mAP':>7} | {'ISE mAP':>7} | {'cc mixed/sub':>12} | {'ISE mixed/sub':>13} | {'cc ARI':>6} | {'ISE ARI':>7}")
    for seed in args.seeds:
        c, i = by[("cc_demo", seed)], by[("ise_demo", seed)]
        print(f"{seed:>4} | {100 * c['mAP']:7.2f} | {100 * i['mAP']:7.2f} | {c['mixed']:>5}/{c['sub']:<6} | {i['mixed']:>6}/{i['sub']:<6} | {c['ari']:6.3f} | {i['ari']:7.3f}")
    mean = lambda cfg, key: sum(by[(cfg, s)][key] for s in args.seeds) / len(args.seeds)  # noqa: E731
    print(f"mean | {100 * mean('cc_demo', 'mAP'):7.2f} | {100 * mean('ise_demo', 'mAP'):7.2f} | "
          f"{mean('cc_demo', 'mixed'):5.1f}/{mean('cc_demo', 'sub'):<6.1f} | {mean('ise_demo', 'mixed'):6.1f}/{mean('ise_demo', 'sub'):<6.1f} | "
          f"{mean('cc_demo', 'ari'):6.3f} | {mean('ise_demo', 'ari'):7.3f}")


if __name__ == "__main__":
    main()
