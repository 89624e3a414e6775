"""The training loop: short on purpose; clustering, evaluation, logging and checkpoints are hooks.

One iteration (DESIGN.md section 2): a P x K batch of pseudo identities -> features f ->
ISE supports s (when the model carries an ISEHead) -> w_cc * ClusterMemory([f; s]) +
LP(f, s) -> backward -> optimizer step -> lr step -> memory momentum update.
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import TrainingError
from ..utils import dist
from .hooks.base import Hook


class Trainer:
    """Holds the training state that hooks read and write."""

    def __init__(self, cfg: Dict[str, Any], model, optimizer, scheduler, losses: Dict[str, Any], train_set, hooks: List[Hook], iters_per_epoch: int) -> None:
        self.cfg = cfg
        self.model = model  # may be paddle.DataParallel
        self.net = getattr(model, "_layers", model)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.memory = losses["ClusterMemoryLoss"]
        self.lp_loss = losses.get("LabelPreservingLoss")
        head = getattr(self.net, "head", None)
        self.ise_head = head if getattr(head, "training_only", False) else None
        self.train_set = train_set
        self.hooks = sorted(hooks, key=lambda h: h.priority)
        self.epochs = int(cfg["Global"]["epochs"])
        self.iters_per_epoch = iters_per_epoch
        self.total_iters = self.epochs * iters_per_epoch
        self.start_epoch = 1
        self.epoch = 0
        self.inner_iter = 0
        self.global_iter = 0
        self.train_loader = None
        self.pseudo_labels: Optional[np.ndarray] = None
        self.epoch_record: Dict[str, Any] = {}
        self.iter_record: Dict[str, float] = {}
        self.best_metric: Dict[str, Any] = {"mAP": -1.0, "epoch": 0}
        self.stop_requested = False

    def call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self)

    def train(self) -> None:
        self.call("before_train")
        for self.epoch in range(self.start_epoch, self.epochs + 1):
            self.epoch_record = {"epoch": self.epoch}
            self.call("before_epoch")
            self.model.train()
            start = time.time()
            for self.inner_iter, batch in enumerate(self.train_loader):
                self.run_step(batch)
                self.global_iter += 1
                self.call("after_iter")
            self.epoch_record["train_seconds"] = time.time() - start
            self.call("after_epoch")
            if self.stop_requested:
                break
        self.call("after_train")

    def progress(self) -> float:
        return min(1.0, self.global_iter / max(1, self.total_iters))

    def run_step(self, batch) -> None:
        import paddle

        images, _, _, idx = batch
        labels = paddle.to_tensor(self.pseudo_labels[np.asarray(idx).reshape(-1)], dtype="int64")
        feats = self.model(images)["features"]
        inputs, targets = feats, labels
        losses: Dict[str, Any] = {}
        supports = support_labels = None
        if self.ise_head is not None:
            supports, support_labels, alpha = self.ise_head(feats, labels, self.memory.memory, (self.global_iter, self.total_iters))
            self.iter_record["alpha"] = float(alpha)
            inputs, targets = self.memory.select_inputs(feats, labels, supports, support_labels)
        losses["loss_cc"] = self.memory(inputs, targets) * self.memory.weight
        if self.lp_loss is not None and supports is not None:
            losses["loss_lp"] = self.lp_loss(feats, supports, labels, support_labels) * self.lp_loss.weight
        loss = paddle.add_n(list(losses.values()))
        value = float(loss)
        if not math.isfinite(value):
            raise TrainingError(
                f"loss is {value} at epoch {self.epoch}, iteration {self.inner_iter + 1} (global step {self.global_iter + 1}), "
                f"batch image indices {np.asarray(idx).reshape(-1)[:8].tolist()}... ({_first_names(self.train_set, idx)}); "
                f"the last checkpoint (latest, epoch {self.epoch - 1}) is intact: "
                f"lower Optimizer.lr.learning_rate or check the data, then resume with -o Global.checkpoints=..."
            )
        self.optimizer.clear_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        with paddle.no_grad():
            mem_x, mem_y = inputs.detach(), targets
            if dist.world_size() > 1:
                mem_x, mem_y = _gather(mem_x), _gather(mem_y)
            self.memory.update(mem_x, mem_y)
        self.iter_record.update({k: float(v) for k, v in losses.items()})
        self.iter_record["loss"] = value
        self.iter_record["lr"] = float(self.optimizer.get_lr())
        self.iter_record["batch_size"] = int(images.shape[0]) * dist.world_size()


def _first_names(dataset, idx, count: int = 3) -> str:
    """File names of the first images of a batch, so a bad batch can be looked at."""
    import os

    images = getattr(dataset, "images", None)
    if not images:
        return "no file names"
    return ", ".join(os.path.basename(images[int(i)]) for i in np.asarray(idx).reshape(-1)[:count]) + ", ..."


def _gather(tensor):
    """Concatenate a tensor from every rank in rank order (same shape on all ranks)."""
    import paddle
    import paddle.distributed as pdist

    parts: list = []
    pdist.all_gather(parts, tensor)
    return paddle.concat(parts, axis=0)
