"""LoggerHook: progress lines with PaddleClas's reader_cost / batch_cost / ips, images/s and ETA,
train_log.jsonl, optional VisualDL."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List

from ...utils import dist
from ...utils.logger import logger
from ..trainer import Hook

EPOCH_KEYS = ("loss", "loss_cc", "loss_lp", "alpha", "lr")
# The first iterations of every epoch are left out of the cost averages, as in PaddleClas
# (ppcls/engine/train: its meters reset at iter 5): loader workers start, oneDNN and
# to_static build their kernels and the allocator grows there, none of which is steady speed.
WARMUP_ITERS = 5


class CostMeter:
    """Sums of ``reader_cost``, ``batch_cost`` and samples over iterations past the warm-up.

    An epoch shorter than the warm-up is averaged over all its iterations rather than none.
    """

    def __init__(self) -> None:
        self.all = [0.0, 0.0, 0, 0]  # reader, batch, samples, iterations (warm-up included)
        self.steady = [0.0, 0.0, 0, 0]  # the same past the warm-up

    def add(self, rec: Dict[str, float], inner_iter: int) -> None:
        row = (rec.get("reader_cost", 0.0), rec.get("batch_cost", 0.0), rec.get("batch_size", 0), 1)
        for sums in (self.all, self.steady) if inner_iter >= WARMUP_ITERS else (self.all,):
            for i, value in enumerate(row):
                sums[i] += value

    def means(self) -> Dict[str, float]:
        """``reader_cost`` and ``batch_cost`` in s per iteration, ``ips`` samples/s (batch size / batch_cost)."""
        reader, batch, samples, iters = self.steady if self.steady[3] else self.all
        if not iters:
            return {}
        return {"reader_cost": reader / iters, "batch_cost": batch / iters, "ips": samples / max(batch, 1e-12)}


class LoggerHook(Hook):
    """Progress every ``every`` iterations; one ``train_log.jsonl`` line per epoch in ``out_dir``."""

    def __init__(self, out_dir: str, every: int, use_visualdl: bool = False) -> None:
        self.out_dir = out_dir
        self.every = int(every)
        self.use_visualdl = bool(use_visualdl)
        self.vdl = None
        self.sums: Dict[str, float] = {}
        self.count = 0
        self.images = 0
        self.window_start = 0.0
        self.train_start = 0.0
        self.iters_done = 0
        self.window = CostMeter()  # since the last progress line
        self.epoch_costs = CostMeter()

    def before_train(self, trainer) -> None:
        self.train_start = time.time()
        if self.use_visualdl and dist.is_main():
            from visualdl import LogWriter

            self.vdl = LogWriter(logdir=os.path.join(self.out_dir, "vdl"))

    def before_epoch(self, trainer) -> None:
        self.sums, self.count, self.images = {}, 0, 0
        self.window, self.epoch_costs = CostMeter(), CostMeter()
        self.window_start = time.time()

    def after_iter(self, trainer) -> None:
        rec = trainer.iter_record
        for key in EPOCH_KEYS:
            if key in rec:
                self.sums[key] = self.sums.get(key, 0.0) + rec[key]
        self.count += 1
        self.images += rec.get("batch_size", 0)
        self.iters_done += 1
        self.window.add(rec, trainer.inner_iter)
        self.epoch_costs.add(rec, trainer.inner_iter)
        if self.vdl is not None:
            for key in EPOCH_KEYS:
                if key in rec:
                    self.vdl.add_scalar(f"train/{key}", rec[key], trainer.global_iter)
        it = trainer.inner_iter + 1
        if it % self.every == 0 or it == trainer.iters_per_epoch:
            elapsed = time.time() - self.window_start
            ips = self.images / max(elapsed, 1e-9)
            remaining = trainer.total_iters - trainer.global_iter
            per_iter = (time.time() - self.train_start) / max(1, self.iters_done)
            losses = ", ".join(f"{k}: {rec[k]:.4f}" for k in ("loss", "loss_cc", "loss_lp") if k in rec)
            alpha = f", alpha: {rec['alpha']:.4f}" if "alpha" in rec else ""
            costs = self.window.means()
            self.window = CostMeter()
            logger.info(
                f"[Train][Epoch {trainer.epoch}/{trainer.epochs}][Iter {it}/{trainer.iters_per_epoch}] lr: {rec.get('lr', 0):.6f}, "
                f"{losses}{alpha}, reader_cost: {costs['reader_cost']:.5f} s, batch_cost: {costs['batch_cost']:.5f} s, "
                f"ips: {costs['ips']:.5f} samples/s, {ips:.1f} images/s, eta: {hms(remaining * per_iter)}"
            )

    def after_epoch(self, trainer) -> None:
        record: Dict[str, Any] = dict(trainer.epoch_record)
        for key, total in self.sums.items():
            record[key] = total / max(1, self.count)
        if "lr" in trainer.iter_record:
            record["lr"] = trainer.iter_record["lr"]
        if "batch_size" in trainer.iter_record:  # the sampler may use fewer identities than asked (few clusters)
            record["batch_size"] = trainer.iter_record["batch_size"]
        record["images_per_second"] = self.images / max(record.get("train_seconds", 0.0), 1e-9)
        record.update(self.epoch_costs.means())  # reader_cost, batch_cost (s/iteration), ips (samples/s)
        if not dist.is_main():
            return
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, "train_log.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.vdl is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.vdl.add_scalar(f"epoch/{key}", value, trainer.epoch)
        logger.info(
            f"[Train][Epoch {trainer.epoch}/{trainer.epochs}][Avg] "
            + ", ".join(f"{k}: {record[k]:.4f}" for k in EPOCH_KEYS if k in record)
            + (f", reader_cost: {record['reader_cost']:.5f} s, batch_cost: {record['batch_cost']:.5f} s"
               if "batch_cost" in record else "")
            + f", {record['images_per_second']:.1f} images/s, {record.get('train_seconds', 0):.1f}s"
        )

    def after_train(self, trainer) -> None:
        if self.vdl is not None:
            self.vdl.close()


def hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def read_train_log(out_dir: str) -> List[Dict[str, Any]]:
    """The epoch records of ``out_dir/train_log.jsonl`` (none if absent; a line torn by a crash is skipped)."""
    path = os.path.join(out_dir, "train_log.jsonl")
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in filter(str.strip, f):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records
