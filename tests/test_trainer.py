"""The trainer in-process: event order, the relabel -> reset -> loader sequence, a run without
clustering, state_dict round trip, checkpointer best/final records, and how a run ends in train.log."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from ppise.engine.builder import resume
from ppise.engine.hooks import CheckpointHook
from ppise.engine.trainer import Hook, Trainer
from ppise.errors import TrainingError
from ppise.loss import Objective
from ppise.utils.checkpoint import load_checkpoint
from ppise.utils.logger import get_logger

N, D, BATCH = 12, 4, 4


class FakeObjective(Objective):
    """Squared features; ``memory`` counts updates, so state travels through checkpoints."""

    def __init__(self, log, needs_clusters=True, blow_up_at=None):
        super().__init__()
        self.needs_clusters = needs_clusters
        self.log, self.blow_up_at = log, blow_up_at
        self.memory = np.zeros(2, np.float32)
        self.steps = 0

    def reset(self, centroids):
        self.log.append(("reset", None if centroids is None else centroids.shape[0]))

    def losses(self, outputs, labels, progress):
        self.steps += 1
        loss = (outputs["features"] ** 2).mean()
        if self.steps == self.blow_up_at:
            loss = loss * float("nan")
        self.metrics["progress"] = progress
        return {"loss_fake": loss}

    def update(self):
        self.memory = self.memory + 1

    def state_dict(self, *args, **kwargs):
        return {"memory": self.memory.copy()}

    def set_state_dict(self, state, *args, **kwargs):
        self.memory = np.asarray(state["memory"], np.float32).copy()


class Net(nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, D)

    def forward(self, x):
        return {"features": self.fc(x)}


class Recorder(Hook):
    def __init__(self, log):
        self.log = log
        self.seen = 0

    def before_train(self, trainer):
        self.log.append("before_train")

    def before_epoch(self, trainer):
        self.log.append(("before_epoch", trainer.epoch))

    def after_iter(self, trainer):
        self.log.append("iter")

    def after_epoch(self, trainer):
        self.seen += 1
        self.log.append(("after_epoch", trainer.epoch))

    def after_train(self, trainer):
        self.log.append("after_train")

    def state_dict(self):
        return {"recorder_seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state.get("recorder_seen", 0)


class TrainSet:
    labels = 1001 + 2 * (np.arange(N) % 3)  # raw person ids, as datasets keep them
    cameras = np.zeros(N, np.int64)
    images = [f"img_{i}.jpg" for i in range(N)]


def make_trainer(log, hooks=(), epochs=2, iters=3, needs_clusters=True, blow_up_at=None, seed=0):
    paddle.seed(seed)
    net = Net()
    sched = paddle.optimizer.lr.StepDecay(0.01, step_size=2)
    opt = paddle.optimizer.Adam(learning_rate=sched, parameters=net.parameters())
    images = paddle.to_tensor(np.random.default_rng(0).normal(size=(N, D)).astype(np.float32))

    def relabel(model, epoch):
        log.append(("relabel", epoch))
        return np.arange(N) % 2, np.ones((2, D), np.float32), {"num_clusters": 2}

    def make_loader(labels, epoch):
        log.append(("loader", epoch, tuple(np.unique(labels))))
        return [(images[i * BATCH:(i + 1) * BATCH], None, None, np.arange(i * BATCH, (i + 1) * BATCH)) for i in range(iters)]

    objective = FakeObjective(log, needs_clusters, blow_up_at)
    return Trainer(net, opt, sched, objective, TrainSet(), relabel if needs_clusters else None, make_loader,
                   [Recorder(log), *hooks], epochs, iters)


def test_one_epoch_reads_relabel_reset_loader_then_hooks():
    log = []
    trainer = make_trainer(log, epochs=2, iters=2)
    trainer.train()
    epoch = lambda e: [("relabel", e), ("reset", 2), ("loader", e, (0, 1)), ("before_epoch", e), "iter", "iter", ("after_epoch", e)]
    assert log == ["before_train", *epoch(1), *epoch(2), "after_train"]
    assert trainer.global_iter == 4 and trainer.epoch_record["num_clusters"] == 2
    assert trainer.iter_record["loss"] == pytest.approx(trainer.iter_record["loss_fake"])
    assert trainer.iter_record["progress"] == pytest.approx(3 / 4)  # t/T before the last step
    np.testing.assert_array_equal(trainer.objective.memory, [4, 4])  # update after every step


def test_run_without_clustering_trains_on_true_ids():
    log = []
    trainer = make_trainer(log, epochs=1, iters=1, needs_clusters=False)
    trainer.train()
    assert ("reset", None) in log and ("loader", 1, (0, 1, 2)) in log  # ids 1001, 1003, 1005 -> classes 0..2
    assert not any(isinstance(e, tuple) and e[0] == "relabel" for e in log)


def test_non_finite_loss_names_step_and_batch():
    trainer = make_trainer([], epochs=2, iters=3, blow_up_at=5)
    with pytest.raises(TrainingError) as err:
        trainer.train()
    msg = str(err.value)
    assert "loss is nan at epoch 2, iteration 2 (global step 5)" in msg
    assert "img_4.jpg" in msg and "latest, epoch 1" in msg and "Global.checkpoints" in msg


def test_state_dict_round_trip_continues_identically():
    full = make_trainer([], epochs=3)
    full.train()
    guard = paddle.utils.unique_name.guard  # parameter and optimizer-state names as in a fresh process
    with guard():
        first = make_trainer([], epochs=3)
        first.epochs = 2
        first.train()
        state = first.state_dict()
    assert set(state) == {"model", "optimizer", "training"}
    assert state["training"]["epoch"] == 2 and state["training"]["global_iter"] == 6
    assert state["training"]["recorder_seen"] == 2
    with guard():
        second = make_trainer([], epochs=3, seed=1)  # different init: everything must come from the state
        second.load_state_dict(state)
        assert (second.start_epoch, second.global_iter, second.hooks[0].seen) == (3, 6, 2)
        np.testing.assert_array_equal(second.objective.memory, [6, 6])
        second.train()
    for name, value in full.net.state_dict().items():
        np.testing.assert_allclose(second.net.state_dict()[name].numpy(), value.numpy(), rtol=1e-6, atol=1e-7)
    assert second.optimizer.get_lr() == full.optimizer.get_lr()


def _file_logger(tmp_path):
    path = str(tmp_path / "train.log")
    get_logger(path)
    return path


def _close_file_handlers():
    log = logging.getLogger("ppise")
    for h in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        log.removeHandler(h)
        h.close()


def test_checkpointer_keeps_best_and_final_and_ends_with_a_summary(tmp_path):
    log_path = _file_logger(tmp_path)
    maps = {1: 0.2, 2: 0.5, 3: 0.3}
    model_dir = str(tmp_path / "RecModel")
    ckpt = CheckpointHook(model_dir, period=10, metrics_of=lambda e: {"mAP": maps[e], "rank1": maps[e] + 0.1},
                          metrics_path=str(tmp_path / "eval_metrics.json"))
    trainer = make_trainer([], hooks=[ckpt], epochs=3)
    try:
        trainer.train()
    finally:
        _close_file_handlers()
    with open(tmp_path / "eval_metrics.json") as f:
        metrics = json.load(f)
    assert metrics["best"] == {"mAP": 0.5, "epoch": 2, "rank1": 0.6}
    assert metrics["final"]["mAP"] == 0.3 and metrics["final"]["epoch"] == 3
    assert load_checkpoint(os.path.join(model_dir, "best_model"))[2]["epoch"] == 2
    states = load_checkpoint(os.path.join(model_dir, "latest"))[2]
    assert states["epoch"] == 3 and states["best_metric"]["epoch"] == 2 and states["metric"]["mAP"] == 0.3
    last = open(log_path).read().strip().splitlines()[-1]
    assert "training finished: 3 epochs" in last and "best mAP 50.00 at epoch 2" in last
    assert os.path.join(model_dir, "best_model") in last and "final mAP 30.00 at epoch 3" in last
    assert os.path.join(model_dir, "latest") in last


def test_resume_line_is_clean_and_a_finished_run_has_nothing_to_do(tmp_path):
    log_path = _file_logger(tmp_path)
    model_dir = str(tmp_path / "RecModel")
    ckpt = CheckpointHook(model_dir, 10, lambda e: None, str(tmp_path / "eval_metrics.json"))
    try:
        make_trainer([], hooks=[ckpt], epochs=2).train()
        events = []
        again = make_trainer(events, hooks=[CheckpointHook(model_dir, 10, lambda e: None, str(tmp_path / "m.json"))], epochs=2)
        resume(again, os.path.join(model_dir, "latest"), str(tmp_path))
        again.train()
    finally:
        _close_file_handlers()
    lines = open(log_path).read().splitlines()
    resumed = [ln for ln in lines if "resumed from" in ln]
    assert resumed and resumed[-1].endswith("epoch 2 done, global step 6")
    assert "nothing to do" in lines[-1] and "Global.epochs" in lines[-1]
    assert events == []  # no hook ran, nothing was re-trained


@pytest.mark.parametrize("raised, expected, code", [
    (TrainingError("clustering found no cluster"), "run ended: error: clustering found no cluster", 2),
    (KeyboardInterrupt(), "run ended: interrupted", 130),
    (ZeroDivisionError("boom"), "run ended by an unexpected error:", None),
])
def test_what_ends_a_run_is_the_last_entry_of_train_log(tmp_path, raised, expected, code):
    from ppise.utils.cli import run_tool

    log_path = _file_logger(tmp_path)

    def main(argv):
        raise raised

    try:
        if code is None:
            with pytest.raises(ZeroDivisionError):
                run_tool(main)
        else:
            with pytest.raises(SystemExit) as exit_info:
                run_tool(main)
            assert exit_info.value.code == code
    finally:
        _close_file_handlers()
    text = open(log_path).read()
    assert expected in text.strip().splitlines()[0]
    if code is None:
        assert "Traceback" in text and "ZeroDivisionError: boom" in text


def test_identity_classes_are_contiguous_and_keep_junk_out():
    from ppise.engine.trainer import identity_classes

    np.testing.assert_array_equal(identity_classes([1005, -1, 1001, 1005, 1003]), [2, -1, 0, 2, 1])
