"""Training hooks: rank consistency, evaluation, logging, checkpoints; ``builder.py`` lists them
in the order they run, with the reason for that order."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..errors import TrainingError
from ..utils import dist
from ..utils.checkpoint import save_checkpoint
from ..utils.fileio import atomic_write
from ..utils.logger import logger
from .evaluator import format_table
from .trainer import Hook

__all__ = ["Hook", "EvalHook", "CheckpointHook", "LoggerHook", "RankConsistencyHook"]

EPOCH_KEYS = ("loss", "loss_cc", "loss_lp", "alpha", "lr")
# The first iterations of every epoch are left out of the cost averages, as in PaddleClas
# (ppcls/engine/train: its meters reset at iter 5): loader workers start, oneDNN and
# to_static build their kernels and the allocator grows there, none of which is steady speed.
WARMUP_ITERS = 5
NO_BEST = {"mAP": -1.0, "epoch": 0}


def average_buffers(model) -> None:
    """All-reduce-average the non-trainable float tensors (BN running mean / variance)."""
    import paddle
    import paddle.distributed as pdist

    world = dist.world_size()
    # Paddle keeps BN running statistics as non-trainable parameters, others keep buffers.
    frozen = [p for p in model.parameters() if p.stop_gradient or not getattr(p, "trainable", True)]
    with paddle.no_grad():
        for buf in frozen + [b for b in model.buffers() if b is not None]:
            if not paddle.is_floating_point(buf):
                continue
            total = buf.clone()
            pdist.all_reduce(total, op=pdist.ReduceOp.SUM)
            buf.set_value(total / world)


def state_digest(trainer) -> dict:
    """SHA-1 of the model's parameters/buffers and of the objective's state (the cluster memory), bit for bit."""
    weights = hashlib.sha1()
    for name, tensor in sorted(trainer.net.state_dict().items()):
        weights.update(name.encode())
        weights.update(np.ascontiguousarray(tensor.numpy()).tobytes())
    memory = hashlib.sha1()
    for _, value in sorted(trainer.objective.state_dict().items()):
        memory.update(np.ascontiguousarray(value).tobytes())
    return {"weights": weights.hexdigest(), "memory": memory.hexdigest()}


class RankConsistencyHook(Hook):
    """Make, and prove, every rank hold the same weights and memory: BatchNorm statistics (which
    neither the gradient all-reduce nor the gathered memory update cover) are averaged after each
    epoch, then digests of every tensor are compared across ranks (checked, not assumed)."""

    def after_epoch(self, trainer) -> None:
        if dist.world_size() == 1:
            return
        average_buffers(trainer.net)
        digests = dist.all_gather_object(state_digest(trainer))
        for key in ("weights", "memory"):
            values = {d[key] for d in digests}
            if len(values) != 1:
                raise TrainingError(f"epoch {trainer.epoch}: {key} differ across ranks ({sorted(values)}); data-parallel state diverged")
        trainer.epoch_record["ranks_consistent"] = True
        trainer.epoch_record["state_digest"] = digests[0]
        logger.info(f"epoch {trainer.epoch}: weights and memory identical on {len(digests)} ranks")


class EvalHook(Hook):
    """``evaluate(net) -> metrics`` every ``period`` epochs and at the last; ``metrics_of(epoch)``
    gives them to whoever needs them."""

    def __init__(self, evaluate: Callable[[Any], Dict[str, Any]], period: int) -> None:
        self.evaluate = evaluate
        self.period = int(period)
        self.last: Optional[Dict[str, Any]] = None

    def metrics_of(self, epoch: int) -> Optional[Dict[str, Any]]:
        """This epoch's metrics, or None when it was not evaluated."""
        return self.last if self.last is not None and self.last["epoch"] == epoch else None

    def after_epoch(self, trainer) -> None:
        if trainer.epoch % self.period != 0 and trainer.epoch != trainer.epochs:
            return
        metrics = self.evaluate(trainer.net)
        self.last = dict(metrics, epoch=trainer.epoch)
        trainer.epoch_record.update({k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)})
        logger.info(f"epoch {trainer.epoch} eval\n{format_table(metrics)}")


class CostMeter:
    """Sums of ``reader_cost``, ``batch_cost`` and samples over iterations past the warm-up (over
    all of them in an epoch shorter than the warm-up)."""

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
    """Progress lines every ``every`` iterations (PaddleClas's reader_cost / batch_cost / ips, ETA);
    one ``train_log.jsonl`` line per epoch in ``out_dir``; optional VisualDL."""

    def __init__(self, out_dir: str, every: int, use_visualdl: bool = False) -> None:
        self.out_dir = out_dir
        self.every = int(every)
        self.use_visualdl = bool(use_visualdl)
        self.vdl = None
        self.sums: Dict[str, float] = {}
        self.window_start = self.train_start = 0.0
        self.iters_done = 0
        self.window = CostMeter()  # since the last progress line
        self.epoch_costs = CostMeter()

    def before_train(self, trainer) -> None:
        self.train_start = time.time()
        if self.use_visualdl and dist.is_main():
            from visualdl import LogWriter

            self.vdl = LogWriter(logdir=os.path.join(self.out_dir, "vdl"))

    def before_epoch(self, trainer) -> None:
        self.sums = {}
        self.window, self.epoch_costs = CostMeter(), CostMeter()
        self.window_start = time.time()

    def after_iter(self, trainer) -> None:
        rec = trainer.iter_record
        for key in EPOCH_KEYS:
            if key in rec:
                self.sums[key] = self.sums.get(key, 0.0) + rec[key]
        self.iters_done += 1
        self.window.add(rec, trainer.inner_iter)
        self.epoch_costs.add(rec, trainer.inner_iter)
        if self.vdl is not None:
            for key in EPOCH_KEYS:
                if key in rec:
                    self.vdl.add_scalar(f"train/{key}", rec[key], trainer.global_iter)
        it = trainer.inner_iter + 1
        if it % self.every == 0 or it == trainer.iters_per_epoch:
            images = self.epoch_costs.all[2]  # since window_start, the start of the epoch
            ips = images / max(time.time() - self.window_start, 1e-9)
            remaining = trainer.total_iters - trainer.global_iter
            per_iter = (time.time() - self.train_start) / max(1, self.iters_done)
            shown = ("loss", "loss_cc", "loss_lp", "alpha")
            losses = ", ".join(f"{k}: {rec[k]:.4f}" for k in shown if k in rec)
            costs = self.window.means()
            self.window = CostMeter()
            logger.info(
                f"[Train][Epoch {trainer.epoch}/{trainer.epochs}][Iter {it}/{trainer.iters_per_epoch}] lr: {rec.get('lr', 0):.6f}, "
                f"{losses}, reader_cost: {costs['reader_cost']:.5f} s, "
                f"batch_cost: {costs['batch_cost']:.5f} s, ips: {costs['ips']:.5f} samples/s, "
                f"{ips:.1f} images/s, eta: {hms(remaining * per_iter)}"
            )

    def after_epoch(self, trainer) -> None:
        record: Dict[str, Any] = dict(trainer.epoch_record)
        _, _, images, iters = self.epoch_costs.all
        for key, total in self.sums.items():
            record[key] = total / max(1, iters)
        # the last lr, and the batch size drawn (the sampler may use fewer identities than asked)
        last = trainer.iter_record
        record.update({k: last[k] for k in ("lr", "batch_size") if k in last})
        record["images_per_second"] = images / max(record.get("train_seconds", 0.0), 1e-9)
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
    """The epoch records of ``out_dir/train_log.jsonl`` (none if absent; torn lines skipped)."""
    path = os.path.join(out_dir, "train_log.jsonl")
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in filter(str.strip, f):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


class CheckpointHook(Hook):
    """``latest`` every epoch, ``best_model`` on a new best mAP (``metrics_of(epoch)``: that epoch's
    evaluation or None), ``epoch_N`` every ``period``; it owns the best-model record (its state and
    ``metrics_path``) and ends the run with a summary line."""

    def __init__(self, model_dir: str, period: int, metrics_of: Callable[[int], Optional[Dict[str, Any]]],
                 metrics_path: str) -> None:
        self.model_dir = model_dir
        self.period = int(period)
        self.metrics_of = metrics_of
        self.metrics_path = metrics_path
        self.best: Dict[str, Any] = dict(NO_BEST)
        self.final: Optional[Dict[str, Any]] = None
        self.start = 0.0

    def state_dict(self) -> Dict[str, Any]:
        metric = {k: v for k, v in (self.final or {}).items() if k in ("mAP", "rank1")}
        return {"best_metric": dict(self.best), "metric": metric}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best = dict(state.get("best_metric") or NO_BEST)

    def before_train(self, trainer) -> None:
        self.start = time.time()

    def save(self, trainer, prefix: str) -> None:
        state = trainer.state_dict()
        base = save_checkpoint(self.model_dir, prefix, state["model"], state["optimizer"], state["training"])
        logger.info(f"saved checkpoint {base}")

    def after_epoch(self, trainer) -> None:
        metrics = self.metrics_of(trainer.epoch)
        is_best = False
        if metrics is not None:
            self.final = dict(_finite(metrics), epoch=trainer.epoch)
            if metrics["mAP"] > self.best["mAP"]:
                self.best = {"mAP": metrics["mAP"], "epoch": trainer.epoch, "rank1": metrics.get("rank1")}
                is_best = True
            logger.info(f"best mAP {100 * self.best['mAP']:.2f} at epoch {self.best['epoch']}")
        if not dist.is_main():
            return
        _refuse_non_finite(trainer)
        if is_best:
            self.save(trainer, "best_model")
        if trainer.epoch % self.period == 0:
            self.save(trainer, f"epoch_{trainer.epoch}")
        self.save(trainer, "latest")  # last: a crash above leaves the previous latest intact
        if metrics is not None:
            with atomic_write(self.metrics_path, "w", encoding="utf-8") as f:
                json.dump({"best": self.best, "final": self.final}, f, indent=2)

    def after_train(self, trainer) -> None:
        text = f"training finished: {trainer.epoch} epochs, {hms(time.time() - self.start)}"
        if self.best["epoch"]:
            text += (f"; best mAP {100 * self.best['mAP']:.2f} at epoch {self.best['epoch']} "
                     f"({os.path.join(self.model_dir, 'best_model')})")
        if self.final is not None:
            text += f"; final mAP {100 * self.final['mAP']:.2f} at epoch {self.final['epoch']}"
        logger.info(text + f"; latest: {os.path.join(self.model_dir, 'latest')}")


def _finite(metrics: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()
            if isinstance(v, (int, float, str)) or v is None}


def _refuse_non_finite(trainer) -> None:
    """Never overwrite good checkpoints with weights or memory that a numeric blow-up destroyed
    (the loss check only sees it at the next forward, which may be in the next epoch)."""
    import paddle

    bad = [name for name, t in trainer.net.state_dict().items()
           if t.dtype in (paddle.float16, paddle.float32, paddle.float64) and not bool(paddle.isfinite(t).all())]
    bad += ["cluster memory" if name == "memory" else f"objective state {name}" for name, v in trainer.objective.state_dict().items()
            if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise TrainingError(
            f"epoch {trainer.epoch}: non-finite values in {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} after "
            f"global step {trainer.global_iter}; checkpoints not written, the last good one (latest, epoch "
            f"{trainer.epoch - 1}) is intact: lower Optimizer.lr.learning_rate, then resume with -o Global.checkpoints=...")


def model_dir_of(cfg: Dict[str, Any]) -> str:
    return os.path.join(cfg["Global"]["output_dir"], cfg.get("Arch", {}).get("name", "RecModel"))
