"""Assemble a Trainer (model, data, losses, optimizer, hooks) from a validated config."""
from __future__ import annotations

import os
import shutil
from typing import Any, Dict

from ..config import get, save as save_config
from ..errors import ConfigError, TrainingError
from ..utils import dist
from ..utils.logger import get_logger, logger
from .hooks import CheckpointHook, ClusterHook, EvalHook, LoggerHook, RankConsistencyHook
from .hooks.checkpoint import model_dir_of
from .trainer import Trainer

RUN_MARKERS = ("train_log.jsonl",)


def prepare_output_dir(cfg: Dict[str, Any]) -> str:
    """Create the output dir; refuse to mix with another run unless resuming or overwriting."""
    glob = cfg["Global"]
    out = glob["output_dir"]
    used = [m for m in RUN_MARKERS if os.path.exists(os.path.join(out, m))]
    if used and not glob.get("checkpoints") and dist.is_main():
        if not glob.get("overwrite"):
            raise TrainingError(
                f"output dir {out} already holds a run ({', '.join(used)}); resume with "
                f"-o Global.checkpoints={os.path.join(model_dir_of(cfg), 'latest')}, choose another "
                f"-o Global.output_dir=..., or pass -o Global.overwrite=True to start over"
            )
        for marker in used:
            os.remove(os.path.join(out, marker))
        shutil.rmtree(model_dir_of(cfg), ignore_errors=True)
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write_test{dist.rank()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise TrainingError(f"output dir {out} (Global.output_dir) is not writable: {err}") from err
    return out


def _trim_log(out_dir: str, last_epoch: int) -> None:
    """On resume, drop log lines of epochs after the checkpoint (they will be redone)."""
    import json

    path = os.path.join(out_dir, "train_log.jsonl")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [ln for ln in f if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if json.loads(ln).get("epoch", 0) <= last_epoch:
                keep.append(ln)
        except ValueError:
            continue  # a line torn by a crash
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
    os.replace(tmp, path)


def build_model_from_config(cfg: Dict[str, Any]):
    """Build ``Arch`` and load ``Global.pretrained_model`` (PaddleClas-format weights work).

    With ``Global.pretrained_model`` set, a backbone ``pretrained: True`` (ImageNet download,
    as in PaddleClas's own configs) is skipped: those weights would be overwritten anyway.
    """
    from ..arch import build_model
    from ..utils.weights import load_pretrained

    glob = cfg["Global"]
    backbone = get(cfg, "Arch.Backbone", None)
    if glob.get("pretrained_model") and isinstance(backbone, dict) and backbone.get("pretrained") is True:
        logger.info("Arch.Backbone.pretrained=True ignored: Global.pretrained_model provides all weights")
        backbone["pretrained"] = False
    model = build_model(cfg["Arch"])
    if glob.get("pretrained_model"):
        # strict on everything retrieval uses; a classifier head (PaddleClas's FC) may differ
        report = load_pretrained(model, glob["pretrained_model"], strict=True, skip_prefixes=("head.",))
        head_keys = [k for k in model.state_dict() if k.startswith("head.")]
        if head_keys:  # a classifier head loads when the file has a matching one
            import paddle

            state = paddle.load(report["path"])
            own = model.state_dict()
            fitting = {k: state[k] for k in head_keys if k in state and list(state[k].shape) == list(own[k].shape)}
            model.set_state_dict(fitting)
            report["loaded"] += len(fitting)
        logger.info(f"loaded {report['loaded']} tensors from {report['path']} (strict except head.*)")
    from ..utils.device import tune_cpu_threads

    tune_cpu_threads(model, glob)  # Global.cpu_threads null on CPU: threads by model size (logged)
    return model


def build_trainer(cfg: Dict[str, Any]) -> Trainer:
    import paddle

    from ..data import build_dataset
    from ..data.integrity import set_output_dir
    from ..loss import build_losses
    from ..optimizer import build_optimizer
    from ..utils.checkpoint import load_resume_checkpoint
    from ..utils.seed import seed_everything, set_rng_state

    glob = cfg["Global"]
    out_dir = prepare_output_dir(cfg)
    get_logger(os.path.join(out_dir, "train.log"))
    set_output_dir(out_dir)  # image check cache and bad_images.txt live with the run
    if dist.is_main():
        save_config(cfg, out_dir)
    seed_everything(int(glob.get("seed") or 0))

    model = build_model_from_config(cfg)

    loss_cfg = get(cfg, "Loss.Train")
    losses = build_losses(loss_cfg, where="Loss.Train")
    if "ClusterMemoryLoss" not in losses:
        raise ConfigError("Loss.Train must contain ClusterMemoryLoss (the cluster contrast memory) to train without labels")
    train_set = build_dataset(get(cfg, "DataLoader.Train"), "DataLoader.Train")
    iters = int(get(cfg, "DataLoader.Train.sampler.iters_per_epoch", 0) or 0)
    if iters < 1:
        raise ConfigError("DataLoader.Train.sampler.iters_per_epoch must be a positive int (iterations per epoch)")
    optimizer, scheduler = build_optimizer(cfg["Optimizer"], model.parameters(), iters, int(glob["epochs"]))
    wrapped = paddle.DataParallel(model) if dist.world_size() > 1 else model

    hooks = [ClusterHook(cfg), RankConsistencyHook(), CheckpointHook(cfg, model_dir_of(cfg)), LoggerHook(cfg)]
    if glob["eval_during_train"]:
        hooks.append(EvalHook(cfg))
    trainer = Trainer(cfg, wrapped, optimizer, scheduler, losses, train_set, hooks, iters)

    if glob.get("checkpoints"):
        used, (model_state, opt_state, states) = load_resume_checkpoint(glob["checkpoints"], warn=logger.warning)
        missing = model.set_state_dict(model_state)
        if opt_state is not None:
            optimizer.set_state_dict(opt_state)
        trainer.start_epoch = int(states.get("epoch", 0)) + 1
        done = trainer.start_epoch - 1
        trainer.global_iter = int(states.get("global_iter", done * iters))
        if trainer.global_iter != done * iters:  # iters_per_epoch changed: progress t/T must stay in [0, 1]
            logger.warning(f"{used} holds {done} epochs in {trainer.global_iter} steps, but DataLoader.Train.sampler."
                           f"iters_per_epoch is now {iters}: the ISE schedule continues from step {done * iters}")
            trainer.global_iter = done * iters
        trainer.best_metric = states.get("best_metric", trainer.best_metric)
        if states.get("memory") is not None:
            trainer.memory.set_memory_state(states["memory"])
        set_rng_state(states.get("rng"))
        _trim_log(out_dir, trainer.start_epoch - 1)
        logger.info(f"resumed from {used}: epoch {trainer.start_epoch - 1} done, global step {trainer.global_iter} {missing or ''}")
    return trainer
