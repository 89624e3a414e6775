"""The training loop. One epoch, top to bottom (docs/design.md section 2):

    labels, centroids = relabel(model)        # extract -> pseudo labels (rank 0) -> broadcast
    objective.reset(centroids)                # a fresh cluster memory
    loader = make_loader(labels, epoch)       # P x K batches of pseudo identities
    for batch in loader: run_step(batch)      # losses -> sum -> backward -> step -> objective.update
    hooks: evaluate, log, checkpoint

A run without clustering (``objective.needs_clusters`` False) trains on the dataset's own
identities (as classes 0..C-1). The trainer names no loss: the objective owns that side.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..errors import TrainingError
from ..utils import dist
from ..utils.logger import logger
from .amp import Precision


class Hook:
    """Extra training behaviour; the builder lists hooks in the order they run at every event."""

    def before_train(self, trainer: "Trainer") -> None:
        pass

    def before_epoch(self, trainer: "Trainer") -> None:
        pass

    def after_iter(self, trainer: "Trainer") -> None:
        pass

    def after_epoch(self, trainer: "Trainer") -> None:
        pass

    def after_train(self, trainer: "Trainer") -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        """Hook state a resume needs (merged into the checkpoint's ``.pdstates``)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class Trainer:
    """Runs the epochs and holds the training state that hooks read.

    Args:
        model: the network (possibly ``paddle.DataParallel``); ``net`` is the bare layer.
        train_set: the training dataset (``labels`` are its true ids, ``images`` its files).
        relabel: ``relabel(net, epoch) -> (labels, centroids, stats)``, if the objective clusters.
        make_loader: ``make_loader(labels, epoch) -> iterable of (images, _, _, indices)``.
        precision: the ``AMP`` section's forward, backward and step; default plain float32.
    """

    def __init__(self, model, optimizer, scheduler, objective, train_set, relabel: Optional[Callable],
                 make_loader: Callable, hooks: List[Hook], epochs: int, iters_per_epoch: int,
                 precision=None) -> None:
        self.model = model
        self.net = getattr(model, "_layers", model)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.objective = objective
        self.train_set = train_set
        self.relabel = relabel
        self.make_loader = make_loader
        self.hooks = list(hooks)
        self.precision = precision or Precision()
        self.epochs = int(epochs)
        self.iters_per_epoch = int(iters_per_epoch)
        self.total_iters = self.epochs * self.iters_per_epoch
        self.start_epoch = 1
        self.epoch = self.inner_iter = self.global_iter = 0
        self.labels: Optional[np.ndarray] = None
        self.epoch_record: Dict[str, Any] = {}  # this epoch's figures, for logging only
        self.iter_record: Dict[str, float] = {}

    def call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self)

    def train(self) -> None:
        if self.start_epoch > self.epochs:
            logger.info(f"nothing to do: all {self.epochs} epochs (Global.epochs) are already trained; "
                        f"raise Global.epochs to train longer")
            return
        self.call("before_train")
        for self.epoch in range(self.start_epoch, self.epochs + 1):
            self.epoch_record = {"epoch": self.epoch}
            if self.objective.needs_clusters:
                labels, centroids, stats = self.relabel(self.net, self.epoch)
                self.epoch_record.update(stats)
            else:
                labels, centroids = identity_classes(self.train_set.labels), None
            self.objective.reset(centroids)
            self.labels = labels
            loader = self.make_loader(labels, self.epoch)
            self.call("before_epoch")
            self.model.train()
            start = time.time()
            batches = iter(loader)  # worker start-up: part of train_seconds, not of reader_cost
            read_start = time.perf_counter()
            for self.inner_iter, batch in enumerate(batches):
                reader_cost = time.perf_counter() - read_start
                self.run_step(batch)
                # PaddleClas's log fields: waiting for the batch, and read start to after objective.update
                self.iter_record.update(reader_cost=reader_cost, batch_cost=time.perf_counter() - read_start)
                self.global_iter += 1
                self.call("after_iter")
                read_start = time.perf_counter()
            self.epoch_record["train_seconds"] = time.time() - start
            self.call("after_epoch")
        self.call("after_train")

    def progress(self) -> float:
        """t / T of the whole run, in [0, 1]."""
        return min(1.0, self.global_iter / max(1, self.total_iters))

    def run_step(self, batch) -> None:
        import paddle

        images, _, _, idx = batch
        labels = paddle.to_tensor(self.labels[np.asarray(idx).reshape(-1)], dtype="int64")
        losses = self.objective.losses(self.precision.forward(self.model, images), labels, self.progress())
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
        self.precision.backward(loss)
        self.precision.step(self.optimizer)
        self.scheduler.step()
        self.objective.update()
        self.iter_record = {k: float(v) for k, v in losses.items()}
        self.iter_record.update(self.objective.metrics, loss=value,
                                lr=float(self.optimizer.get_lr()),
                                batch_size=int(images.shape[0]) * dist.world_size())

    # ------------------------------------------------------------------ save / resume
    def state_dict(self) -> Dict[str, Any]:
        """All training state: ``model`` (.pdparams, float32 with AMP too), ``optimizer`` (.pdopt,
        with the lr schedule) and ``training`` (.pdstates: epoch, step, loss scale, objective, hooks, RNG)."""
        from ..utils.seed import rng_state

        training: Dict[str, Any] = {"epoch": self.epoch, "global_iter": self.global_iter, "rng": rng_state(),
                                    "amp_scaler": self.precision.state_dict()}
        training.update(self.objective.state_dict())
        for hook in self.hooks:
            training.update(hook.state_dict())
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "training": training}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; training continues with the epoch after ``epoch``."""
        from ..utils.seed import set_rng_state

        training = state.get("training") or {}
        self.net.set_state_dict(state["model"])
        if state.get("optimizer") is not None:
            self.optimizer.set_state_dict(state["optimizer"])
        self.epoch = int(training.get("epoch", 0))
        self.start_epoch = self.epoch + 1
        self.global_iter = int(training.get("global_iter", self.epoch * self.iters_per_epoch))
        self.precision.set_state_dict(training.get("amp_scaler"))
        self.objective.set_state_dict(training)
        for hook in self.hooks:
            hook.load_state_dict(training)
        set_rng_state(training.get("rng"))


def identity_classes(ids) -> np.ndarray:
    """True person ids -> classes 0..C-1 in id order; negative (junk) ids stay -1, never drawn."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    classes = np.full(ids.shape, -1, dtype=np.int64)
    keep = ids >= 0
    classes[keep] = np.unique(ids[keep], return_inverse=True)[1]
    return classes


def _first_names(dataset, idx, count: int = 3) -> str:
    """File names of the first images of a batch, so a bad batch can be looked at."""
    images = getattr(dataset, "images", None)
    if not images:
        return "no file names"
    return ", ".join(os.path.basename(images[int(i)]) for i in np.asarray(idx).reshape(-1)[:count]) + ", ..."
