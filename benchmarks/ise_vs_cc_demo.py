"""ISE versus the cluster-contrast baseline on the demo data: same budget, paired seeds.

Runs ``configs/ise_demo.yaml`` and ``configs/cc_demo.yaml`` (identical but for the ISE
supports and the LP loss) for every seed; one seed gives both methods the same initial
weights, sampling order and data (``--vary-data``: each seed its own synthetic set, still
shared by the two methods). Prints per seed the final and best mAP, the last epoch's ARI,
mixed clusters and split (sub) identities; then each method's mean and standard deviation
and the paired differences ISE - CC with their mean and a 95 % t interval.

    python benchmarks/ise_vs_cc_demo.py --seeds 0 1 2 3 4            # ~13 min on 2 cores (+1.5 min the first time: pre-training)
    python benchmarks/ise_vs_cc_demo.py --seeds 0 -o Global.epochs=2  # smoke test
    python benchmarks/ise_vs_cc_demo.py --seeds 0 1 2 3 4 --json results.json --plot ise_vs_cc.png

Two runs go at a time with one thread each (``--jobs``); the machine may be shared, so the
seconds column is only comparable within one invocation.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

METHODS = (("cc", "configs/cc_demo.yaml"), ("ise", "configs/ise_demo.yaml"))
# (result key, column title, scale, format)
COLUMNS = (("final_mAP", "final mAP", 100.0, "{:6.2f}"), ("best_mAP", "best mAP", 100.0, "{:6.2f}"),
           ("ari", "ARI", 1.0, "{:6.3f}"), ("mixed", "mixed", 1.0, "{:5.0f}"), ("sub", "sub", 1.0, "{:5.0f}"))
DATA_ROOTS = ("DataLoader.Train.dataset.image_root", "DataLoader.Eval.Query.dataset.image_root",
              "DataLoader.Eval.Gallery.dataset.image_root")


def summarize_log(log: Sequence[Dict]) -> Dict[str, Optional[float]]:
    """Final / best mAP and the last epoch's clustering numbers of one train_log.jsonl."""
    if not log:
        raise ValueError("empty train_log.jsonl")
    evals = [r for r in log if isinstance(r.get("mAP"), (int, float))]
    last = log[-1]
    return {
        "final_mAP": evals[-1]["mAP"] if evals else None,
        "best_mAP": max(r["mAP"] for r in evals) if evals else None,
        "best_epoch": max(evals, key=lambda r: r["mAP"])["epoch"] if evals else None,
        "ari": last.get("ari"), "mixed": last.get("mixed_clusters"), "sub": last.get("sub_identities"),
        "clusters": last.get("num_clusters"), "epochs": last.get("epoch"),
        "seconds": sum(float(r.get("train_seconds", 0)) + float(r.get("cluster_seconds", 0)) for r in log),
    }


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return m, sd


def paired_ci(diffs: Sequence[float], level: float = 0.95) -> Tuple[float, float, float]:
    """Mean of paired differences and its ``level`` interval from the t distribution (n - 1 df)."""
    from scipy import stats

    n = len(diffs)
    m, sd = mean_std(diffs)
    if n < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return m, m - half, m + half


def _read_log(path: str) -> List[Dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def prepare_data(config: str, overrides: List[str]) -> None:
    """Generate the config's synthetic set once, before two runs could race to write it."""
    from ppise.config import get_config

    try:
        from ppise.data.demo_data import ensure_dataset
    except ImportError:
        from ppise.data.prepare import ensure_dataset
    ensure_dataset(get_config(os.path.join(ROOT, config), overrides))


def data_overrides(seed: int, out_root: str, vary: bool) -> List[str]:
    if not vary:
        return []
    root = os.path.join(out_root, "data", f"seed{seed}")
    return [f"{k}={root}" for k in DATA_ROOTS] + [f"Global.synthetic_dataset.seed={seed}"]


def run(method: str, config: str, seed: int, out_root: str, extra: List[str]) -> Dict:
    out = os.path.join(out_root, f"{os.path.splitext(os.path.basename(config))[0]}_seed{seed}")
    overrides = [f"Global.seed={seed}", f"Global.output_dir={out}", "Global.overwrite=True", "Global.cpu_threads=1"] + extra
    cmd = [sys.executable, os.path.join(ROOT, "tools/train.py"), "-c", os.path.join(ROOT, config)]
    cmd += sum((["-o", o] for o in overrides), [])
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{method} seed {seed} failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    res = summarize_log(_read_log(os.path.join(out, "train_log.jsonl")))
    res.update(method=method, seed=seed, output_dir=out)
    return res


def report(results: List[Dict], seeds: Sequence[int]) -> str:
    by = {(r["method"], r["seed"]): r for r in results}
    names = [m for m, _ in METHODS]
    head = ["seed"] + [f"{m} {title}" for _, title, _, _ in COLUMNS for m in names]
    widths = [max(6, len(h)) for h in head]
    lines = [" | ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    for seed in seeds:
        cells = [str(seed)]
        for key, _, scale, fmt in COLUMNS:
            for m in names:
                v = by[(m, seed)][key]
                cells.append(fmt.format(v * scale) if isinstance(v, (int, float)) else "-")
        lines.append(" | ".join(c.rjust(w) for c, w in zip(cells, widths)))
    lines.append("")
    lines.append(f"over {len(seeds)} seed(s): mean +- std per method; paired difference ISE - CC: mean [95% t interval]")
    for key, title, scale, _ in COLUMNS:
        row = [f"{title:>9}"]
        vals = {}
        for m in names:
            vs = [by[(m, s)][key] for s in seeds]
            if any(not isinstance(v, (int, float)) for v in vs):
                row.append(f"{m}: -")
                continue
            vals[m] = [v * scale for v in vs]
            mu, sd = mean_std(vals[m])
            row.append(f"{m}: {mu:7.3f} +- {sd:6.3f}" if len(seeds) > 1 else f"{m}: {mu:7.3f}")
        if len(vals) == 2:
            d = [i - c for i, c in zip(vals["ise"], vals["cc"])]
            mu, lo, hi = paired_ci(d)
            row.append(f"ISE - CC: {mu:+7.3f} [{lo:+.3f}, {hi:+.3f}]" if len(seeds) > 1
                       else f"ISE - CC: {mu:+7.3f} (one seed: no interval)")
        lines.append(" | ".join(row))
    secs = {m: sum(by[(m, s)]["seconds"] for s in seeds) for m in names}
    lines.append("")
    lines.append("training + clustering seconds (shared machine, compare within this run only): "
                 + ", ".join(f"{m} {secs[m]:.0f}" for m in names))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", default=os.path.join(ROOT, "output", "ise_vs_cc"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--vary-data", action="store_true", help="each seed its own synthetic set (seed = data seed)")
    parser.add_argument("--json", default=None, help="also write the per-run results here")
    parser.add_argument("--plot", default=None, help="also draw both methods' curves (tools/plot_log.py) to this PNG")
    parser.add_argument("-o", "--override", action="append", default=[], help="config override for both methods")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct")
    for seed in args.seeds:  # data first, in this process: two runs never race to generate it
        extra = data_overrides(seed, args.out, args.vary_data) + args.override
        prepare_data(METHODS[0][1], extra)
        if not args.vary_data:
            break
    tasks = [(m, cfg, seed) for seed in args.seeds for m, cfg in METHODS]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(
            lambda t: run(t[0], t[1], t[2], args.out, data_overrides(t[2], args.out, args.vary_data) + args.override), tasks))
    print(report(results, args.seeds))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        import importlib.util

        spec = importlib.util.spec_from_file_location("plot_log", os.path.join(ROOT, "tools", "plot_log.py"))
        plot_log = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(plot_log)  # type: ignore[union-attr]
        groups = {m.upper(): [r["output_dir"] for r in results if r["method"] == m] for m, _ in METHODS}
        plot_log.plot(groups, args.plot, title=f"ISE vs CC, demo, {len(args.seeds)} seed(s)")
        print(f"curves: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
