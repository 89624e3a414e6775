"""EvalHook: evaluate every ``period`` epochs and at the last one."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

from ...utils.logger import logger
from ..evaluator import format_table
from ..trainer import Hook


class EvalHook(Hook):
    """``evaluate(net) -> metrics``; ``metrics_of(epoch)`` gives them to whoever needs them."""

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
