"""EvalHook: evaluate every ``Global.eval_interval`` epochs and track the best mAP."""
from __future__ import annotations

import math
from typing import Any, Dict

from ...registry import HOOKS
from ...utils.logger import logger
from ..evaluator import build_eval_loader, evaluate_model, format_table
from .base import Hook


@HOOKS.register
class EvalHook(Hook):
    priority = 30

    def __init__(self, cfg: Dict[str, Any]) -> None:
        self.cfg = cfg
        self.loaders = None

    def before_train(self, trainer) -> None:
        self.loaders = {split: build_eval_loader(self.cfg, split) for split in ("Query", "Gallery")}

    def after_epoch(self, trainer) -> None:
        glob = self.cfg["Global"]
        last = trainer.epoch == trainer.epochs
        if not glob["eval_during_train"] or (trainer.epoch % glob["eval_interval"] != 0 and not last):
            return
        metrics = evaluate_model(trainer.net, self.cfg, loaders=self.loaders)
        trainer.epoch_record.update({k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)})
        if metrics["mAP"] > trainer.best_metric["mAP"]:
            trainer.best_metric = {"mAP": metrics["mAP"], "epoch": trainer.epoch, "rank1": metrics.get("rank1")}
            trainer.epoch_record["is_best"] = True
        logger.info(f"epoch {trainer.epoch} eval\n{format_table(metrics)}\nbest mAP {100 * trainer.best_metric['mAP']:.2f} at epoch {trainer.best_metric['epoch']}")
