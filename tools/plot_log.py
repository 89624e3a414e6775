"""Draw training curves from one or more runs' train_log.jsonl to a PNG.

    python tools/plot_log.py output/ise_demo output/cc_demo --out curves.png
    python tools/plot_log.py ISE=output/ise_vs_cc/ise_demo_seed* CC=output/ise_vs_cc/cc_demo_seed* --out ise_vs_cc.png

Each argument is a run folder (holding train_log.jsonl), a train_log.jsonl file, or
``LABEL=PATH``. Runs with the same label (by default the folder name without a trailing
``_seedN``) are one group: drawn as the mean over its runs with a band of +- one standard
deviation (min..max with --band range). One panel per quantity found in the logs: mAP and
rank-1 (evaluation epochs only, in %), clustering ARI, clusters, outliers, mixed clusters,
split identities and every loss term.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# (log key, panel title, scale): the order of the panels
PANELS: Tuple[Tuple[str, str, float], ...] = (
    ("mAP", "mAP (%)", 100.0),
    ("rank1", "rank-1 (%)", 100.0),
    ("ari", "clustering ARI", 1.0),
    ("num_clusters", "clusters", 1.0),
    ("num_outliers", "outliers (DBSCAN noise)", 1.0),
    ("mixed_clusters", "mixed clusters", 1.0),
    ("sub_identities", "split identities (sub)", 1.0),
    ("loss", "total loss", 1.0),
)
_SEED = re.compile(r"[_-]seed\d+$")


def read_log(path: str) -> List[Dict]:
    """Records of a train_log.jsonl (a folder holding one works too); torn lines are skipped.

    On a resumed run a later line for an epoch replaces the earlier one.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "train_log.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no train_log.jsonl at {path}")
    by_epoch: Dict[int, Dict] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
                by_epoch[rec["epoch"]] = rec
    return [by_epoch[e] for e in sorted(by_epoch)]


def default_label(path: str) -> str:
    folder = os.path.dirname(path) if path.endswith(".jsonl") else path
    return _SEED.sub("", os.path.basename(os.path.normpath(folder))) or folder


def group_runs(specs: Sequence[str]) -> "OrderedDict[str, List[str]]":
    """``{label: [paths]}`` in the order given; ``LABEL=PATTERN`` globs, plain paths group by folder name."""
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for spec in specs:
        label, _, pattern = spec.partition("=") if "=" in spec else ("", "", spec)
        paths = sorted(glob.glob(pattern)) or [pattern]
        for p in paths:
            groups.setdefault(label or default_label(p), []).append(p)
    return groups


def series(runs: Sequence[List[Dict]], key: str, scale: float = 1.0) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(epochs, values[run, epoch])`` over the epochs where any run logged ``key`` (NaN where a run did not)."""
    epochs = sorted({r["epoch"] for run in runs for r in run if isinstance(r.get(key), (int, float))})
    if not epochs:
        return None
    col = {e: i for i, e in enumerate(epochs)}
    vals = np.full((len(runs), len(epochs)), np.nan)
    for i, run in enumerate(runs):
        for r in run:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                vals[i, col[r["epoch"]]] = float(v) * scale
    return np.asarray(epochs), vals


def panel_keys(all_runs: Sequence[List[Dict]]) -> List[Tuple[str, str, float]]:
    present = {k for run in all_runs for r in run for k, v in r.items() if isinstance(v, (int, float))}
    keys = [p for p in PANELS if p[0] in present]
    losses = sorted(k for k in present if k.startswith("loss_"))
    return keys + [(k, k, 1.0) for k in losses]


def plot(groups: "OrderedDict[str, List[str]]", out: str, band: str = "std", title: Optional[str] = None,
         columns: int = 3) -> Dict[str, int]:
    """Draw every group into ``out`` (PNG); returns ``{label: number of runs}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    logs = OrderedDict((label, [read_log(p) for p in paths]) for label, paths in groups.items())
    panels = panel_keys([run for runs in logs.values() for run in runs])
    if not panels:
        raise ValueError("the logs hold no numeric per-epoch values to draw")
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, name, scale) in zip(axes.flat, panels):
        for gi, (label, runs) in enumerate(logs.items()):
            s = series(runs, key, scale)
            if s is None:
                continue
            epochs, vals = s
            c = colours[gi % len(colours)]
            with _quiet():
                mean = np.nanmean(vals, axis=0)
            n = len(runs)
            tag = f"{label} (mean of {n})" if n > 1 else label
            ax.plot(epochs, mean, marker="o" if len(epochs) < 25 else None, ms=3, color=c, label=tag)
            if n > 1:
                with _quiet():
                    if band == "range":
                        lo, hi = np.nanmin(vals, axis=0), np.nanmax(vals, axis=0)
                    else:
                        sd = np.nanstd(vals, axis=0)
                        lo, hi = mean - sd, mean + sd
                ax.fill_between(epochs, lo, hi, color=c, alpha=0.2, linewidth=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        extra = "; band: +-1 std" if band == "std" else "; band: min..max"
        many = any(len(r) > 1 for r in logs.values())
        fig.legend(handles, labels, loc="upper center", ncol=min(4, len(handles)), fontsize=9,
                   title=(title or "") + (extra if many else ""), title_fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / (3.0 * rows)))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return {label: len(runs) for label, runs in logs.items()}


class _quiet:
    """Silence numpy's all-NaN-slice warnings inside a block."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folder, train_log.jsonl, or LABEL=PATH (glob patterns allowed)")
    p.add_argument("--out", default="train_curves.png", help="PNG to write (default train_curves.png)")
    p.add_argument("--band", choices=("std", "range"), default="std", help="band of a group of runs")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    try:
        counts = plot(group_runs(args.runs), args.out, band=args.band, title=args.title)
    except ImportError as err:
        print(f"error: plotting needs matplotlib ({err}); pip install matplotlib", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + ", ".join(f"{k} ({v} run{'s' if v > 1 else ''})" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
