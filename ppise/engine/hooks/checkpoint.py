"""CheckpointHook: latest every epoch, best_model on a new best mAP, epoch_N every ``period``.

It owns the best-model record: it keeps the best metrics (with their epoch) in its state,
writes ``eval_metrics.json`` (best and final) and ends the run with a summary line.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from ...errors import TrainingError
from ...utils import dist
from ...utils.checkpoint import save_checkpoint
from ...utils.fileio import atomic_write
from ...utils.logger import logger
from ..trainer import Hook
from .logger import hms

NO_BEST = {"mAP": -1.0, "epoch": 0}


class CheckpointHook(Hook):
    """Args: ``model_dir`` ({output_dir}/{Arch.name}); ``period`` (Global.save_interval);
    ``metrics_of(epoch)`` -> that epoch's evaluation or None; ``metrics_path`` for eval_metrics.json."""

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
