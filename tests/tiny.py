"""A tiny but real training setup shared by the training, resume and distributed tests."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Optional

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEMO = os.path.join(ROOT, "configs", "ise_demo.yaml")


def make_data(path: str, ids: int = 24, seed: int = 5) -> str:
    from synthreid import dataset_present, make_synthetic_reid

    if not dataset_present(path):
        make_synthetic_reid(path, num_ids=ids, seed=seed)
    return path


def tiny_overrides(data: str, out: str, epochs: int = 2, iters: int = 4, workers: int = 0) -> List[str]:
    """Demo config shrunk: ~190 train images, an 8-16-16-32 ResNetMini, 16-image P x K batches."""
    ov = [f"DataLoader.{s}.dataset.image_root={data}" for s in ("Train", "Eval.Query", "Eval.Gallery")]
    ov += [f"DataLoader.{s}.loader.num_workers={workers}" for s in ("Train", "Eval.Query", "Eval.Gallery")]
    ov += [
        "Global.synthetic_dataset=null",
        "Global.pretrained_model=null",  # the tiny model has its own widths: no demo pre-training
        f"Global.output_dir={out}",
        f"Global.epochs={epochs}",
        "Global.eval_interval=1",
        "Global.save_interval=1",
        "Global.print_batch_step=2",
        f"DataLoader.Train.sampler.iters_per_epoch={iters}",
        "DataLoader.Train.sampler.batch_size=16",
        "Arch.Backbone.widths=[8,16,16,32]",
        "Arch.Backbone.stem_channels=8",
        "Arch.Backbone.out_channels=32",
        "Arch.Neck.num_features=32",
        "Loss.Train.0.ClusterMemoryLoss.num_features=32",
        "Cluster.k1=10",
        "Cluster.eps=0.6",
        "Cluster.min_samples=3",
    ]
    return ov


def run_tool(script: str, overrides: List[str], config: str = DEMO, timeout: int = 300,
             launcher: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    args = [sys.executable] + (launcher or []) + [os.path.join(ROOT, script), "-c", config]
    for o in overrides:
        args += ["-o", o]
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    return proc


def read_log(out: str) -> List[dict]:
    import json

    with open(os.path.join(out, "train_log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_script(relpath: str):
    """Import a repo script that is not a package module (tools/, benchmarks/) by its path."""
    import importlib.util

    name = os.path.splitext(os.path.basename(relpath))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod
