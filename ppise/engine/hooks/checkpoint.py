"""CheckpointHook: latest every epoch, best_model on a new best mAP, epoch_N every save_interval."""
from __future__ import annotations

import os
from typing import Any, Dict

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
    priority = 40

    def __init__(self, cfg: Dict[str, Any], model_dir: str) -> None:
        self.cfg = cfg
        self.model_dir = model_dir

    def save(self, trainer, prefix: str) -> None:
        base = save_checkpoint(self.model_dir, prefix, trainer.net.state_dict(), trainer.optimizer.state_dict(), training_state(trainer))
        logger.info(f"saved checkpoint {base}")

    def after_epoch(self, trainer) -> None:
        if not dist.is_main():
            return
        if trainer.epoch_record.get("is_best"):
            self.save(trainer, "best_model")
        if trainer.epoch % self.cfg["Global"]["save_interval"] == 0:
            self.save(trainer, f"epoch_{trainer.epoch}")
        self.save(trainer, "latest")  # last: a crash above leaves the previous latest intact


def model_dir_of(cfg: Dict[str, Any]) -> str:
    return os.path.join(cfg["Global"]["output_dir"], cfg.get("Arch", {}).get("name", "RecModel"))
