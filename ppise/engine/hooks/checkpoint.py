"""CheckpointHook: latest every epoch, best_model on a new best mAP, epoch_N every save_interval."""
from __future__ import annotations

import os
from typing import Any, Dict

from ...errors import TrainingError
from ...registry import HOOKS
from ...utils import dist
from ...utils.checkpoint import save_checkpoint
from ...utils.logger import logger
from ...utils.seed import rng_state
from .base import Hook


def training_state(trainer) -> Dict[str, Any]:
    """Everything beyond weights and optimizer that an exact resume needs."""
    return {
        "epoch": trainer.epoch,
        "global_iter": trainer.global_iter,
        "memory": trainer.memory.memory_state(),
        "rng": rng_state(),
        "best_metric": dict(trainer.best_metric),
        "metric": {k: v for k, v in trainer.epoch_record.items() if k in ("mAP", "rank1")},
    }


@HOOKS.register
class CheckpointHook(Hook):
    # After LoggerHook (90): a crash between the two then leaves a log line newer than `latest`,
    # which resume trims and redoes, instead of a checkpointed epoch missing from train_log.jsonl.
    priority = 95

    def __init__(self, cfg: Dict[str, Any], model_dir: str) -> None:
        self.cfg = cfg
        self.model_dir = model_dir

    def save(self, trainer, prefix: str) -> None:
        base = save_checkpoint(self.model_dir, prefix, trainer.net.state_dict(), trainer.optimizer.state_dict(), training_state(trainer))
        logger.info(f"saved checkpoint {base}")

    def after_epoch(self, trainer) -> None:
        if not dist.is_main():
            return
        _refuse_non_finite(trainer)
        if trainer.epoch_record.get("is_best"):
            self.save(trainer, "best_model")
        if trainer.epoch % self.cfg["Global"]["save_interval"] == 0:
            self.save(trainer, f"epoch_{trainer.epoch}")
        self.save(trainer, "latest")  # last: a crash above leaves the previous latest intact


def _refuse_non_finite(trainer) -> None:
    """Never overwrite good checkpoints with weights or memory that a numeric blow-up destroyed
    (the loss check only sees it at the next forward, which may be in the next epoch)."""
    import numpy as np
    import paddle

    bad = [name for name, t in trainer.net.state_dict().items()
           if t.dtype in (paddle.float16, paddle.float32, paddle.float64) and not bool(paddle.isfinite(t).all())]
    if not np.isfinite(trainer.memory.memory_state()).all():
        bad.append("cluster memory")
    if bad:
        raise TrainingError(
            f"epoch {trainer.epoch}: non-finite values in {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} after "
            f"global step {trainer.global_iter}; checkpoints not written, the last good one (latest, epoch "
            f"{trainer.epoch - 1}) is intact: lower Optimizer.lr.learning_rate, then resume with -o Global.checkpoints=...")


def model_dir_of(cfg: Dict[str, Any]) -> str:
    return os.path.join(cfg["Global"]["output_dir"], cfg.get("Arch", {}).get("name", "RecModel"))
