"""Assemble a Trainer (model, objective, data, optimizer, relabel stage, hooks) from a validated config."""
from __future__ import annotations

import functools
import json
import os
import shutil
from typing import Any, Dict

from ..config import get, save as save_config
from ..data.demo_data import is_demo_run
from ..errors import ConfigError, TrainingError
from ..utils import dist
from ..utils.logger import get_logger, logger
from ..utils.fileio import atomic_write, ensure_writable_dir
from .hooks import (CheckpointHook, EvalHook, LoggerHook, RankConsistencyHook, model_dir_of,
                    read_train_log)
from .trainer import Trainer

RUN_MARKERS = ("train_log.jsonl",)


def prepare_output_dir(cfg: Dict[str, Any]) -> str:
    """Create the output dir; refuse to mix with another run unless resuming or overwriting."""
    glob = cfg["Global"]
    out = glob["output_dir"]
    used = [m for m in RUN_MARKERS if os.path.exists(os.path.join(out, m))]
    if used and not glob.get("checkpoints") and dist.is_main():
        if is_demo_run(cfg):  # the README's first command, run again: start over, say so
            logger.info(f"output dir {out} holds an earlier demo run: starting over (a run on other data is "
                        f"never overwritten without -o Global.overwrite=True)")
        elif not glob.get("overwrite"):
            raise TrainingError(
                f"output dir {out} already holds a run ({', '.join(used)}); resume with "
                f"-o Global.checkpoints={os.path.join(model_dir_of(cfg), 'latest')}, choose another "
                f"-o Global.output_dir=..., or pass -o Global.overwrite=True to start over")
        for marker in used:
            os.remove(os.path.join(out, marker))
        shutil.rmtree(model_dir_of(cfg), ignore_errors=True)
    return ensure_writable_dir(out, "output dir (Global.output_dir)")


def build_model_from_config(cfg: Dict[str, Any]):
    """Build ``Arch`` and load ``Global.pretrained_model`` (PaddleClas-format weights work); a
    backbone ``pretrained`` download is then skipped, as those weights would be overwritten."""
    from ..arch import build_model
    from ..utils.weights import load_pretrained

    glob = cfg["Global"]
    backbone = get(cfg, "Arch.Backbone", None)
    if glob.get("pretrained_model") and isinstance(backbone, dict) and backbone.get("pretrained") not in (None, False):
        logger.info(f"Arch.Backbone.pretrained={backbone['pretrained']} ignored: Global.pretrained_model provides all weights")
        backbone["pretrained"] = False
    model = build_model(cfg["Arch"])
    if glob.get("pretrained_model"):
        # strict on everything retrieval uses; a classifier head (PaddleClas's FC) loads if it fits
        path = load_pretrained(model, glob["pretrained_model"], skip_prefixes=("head.",))["path"]
        head = {k: list(v.shape) for k, v in model.state_dict().items() if k.startswith("head.")}
        if head:
            import paddle

            state = paddle.load(path)
            fitting = {k: state[k] for k in head if k in state and list(state[k].shape) == head[k]}
            model.set_state_dict(fitting)
            if fitting:  # load_pretrained has already logged the other tensors
                logger.info(f"loaded {len(fitting)} classifier head tensors from {path} as well")
    from ..utils.device import tune_cpu_threads

    tune_cpu_threads(model, glob)  # Global.cpu_threads null on CPU: threads by model size (logged)
    return model


def _extract_loader(cfg: Dict[str, Any]):
    """Un-augmented loader over the training images, for re-clustering (eval transforms by default)."""
    from ..data import build_dataloader, build_dataset, build_sampler

    ops = get(cfg, "Cluster.transform_ops", None) or get(cfg, "DataLoader.Eval.Query.dataset.transform_ops", None)
    dataset = build_dataset(get(cfg, "DataLoader.Train"), "DataLoader.Train", transform_ops=ops)
    batch = int(get(cfg, "Cluster.batch_size", None) or get(cfg, "DataLoader.Eval.Query.sampler.batch_size", 64))
    sampler = build_sampler({"name": "BatchSampler", "batch_size": batch}, dataset.labels, dataset.cameras,
                            where="Cluster", rank=dist.rank(), world_size=dist.world_size())
    loader_cfg = get(cfg, "DataLoader.Eval.Query.loader", None) or get(cfg, "DataLoader.Train.loader", None)
    return build_dataloader(dataset, sampler, loader_cfg)


def _train_loader(cfg: Dict[str, Any], train_set, labels, epoch: int):
    """The epoch's training loader: the configured sampler over ``labels`` (-1 never drawn)."""
    from ..data import build_dataloader, build_sampler

    sampler = build_sampler(get(cfg, "DataLoader.Train.sampler"), labels, train_set.cameras, where="DataLoader.Train.sampler",
                            rank=dist.rank(), world_size=dist.world_size(), seed=int(cfg["Global"].get("seed") or 0))
    sampler.set_epoch(epoch)
    return build_dataloader(train_set, sampler, get(cfg, "DataLoader.Train.loader", None))


def build_trainer(cfg: Dict[str, Any]) -> Trainer:
    import paddle

    from ..data import build_dataset
    from ..data.integrity import set_output_dir
    from ..loss import build_objective
    from ..optimizer import build_optimizer
    from ..utils.seed import seed_everything
    from .amp import Precision, amp_settings, apply_to_static, decorate
    from .evaluator import build_eval_loader, evaluate_model
    from .relabel import Relabel

    glob = cfg["Global"]
    out_dir = prepare_output_dir(cfg)
    get_logger(os.path.join(out_dir, "train.log"))
    set_output_dir(out_dir)  # image check cache and bad_images.txt live with the run
    if dist.is_main():
        save_config(cfg, out_dir)
    seed_everything(int(glob.get("seed") or 0))

    model = build_model_from_config(cfg)
    objective = build_objective(get(cfg, "Loss.Train"), where="Loss.Train")
    train_set = build_dataset(get(cfg, "DataLoader.Train"), "DataLoader.Train")
    iters = int(get(cfg, "DataLoader.Train.sampler.iters_per_epoch", 0) or 0)
    if iters < 1:
        raise ConfigError("DataLoader.Train.sampler.iters_per_epoch must be a positive int (iterations per epoch)")
    optimizer, scheduler = build_optimizer(cfg["Optimizer"], model.parameters(), iters, int(glob["epochs"]))
    amp = amp_settings(cfg, device=paddle.device.get_device())  # on CPU: logged and off (see amp.py)
    model, optimizer = decorate(model, optimizer, amp)  # O2 only; checkpoints stay float32
    apply_to_static(model, glob, training=True)  # Global.to_static; relabel and eval run the same compiled forward
    wrapped = paddle.DataParallel(model) if dist.world_size() > 1 else model
    relabel = None
    if objective.needs_clusters:
        labels_dir = os.path.join(out_dir, "pseudo_labels") if cfg["Cluster"].get("save_labels") else None
        relabel = Relabel(_extract_loader(cfg), cfg["Cluster"], labels_dir, amp=amp)
    else:  # trained on the true identities: the classifier must have one row each
        from ..loss.supervised import class_labels

        head = get(cfg, "Arch.Head", None)
        class_num = head.get("class_num") if isinstance(head, dict) else None
        class_labels([i for i in train_set.labels if i >= 0], class_num)

    evaluator = None
    if glob["eval_during_train"]:
        loaders = {split: build_eval_loader(cfg, split) for split in ("Query", "Gallery")}
        evaluator = EvalHook(functools.partial(evaluate_model, cfg=cfg, loaders=loaders, amp=amp), glob["eval_interval"])
    hooks = [
        # First after an epoch: evaluation and checkpoints must see the ranks' averaged, checked model.
        RankConsistencyHook(),
        # Before the checkpointer, which keeps best_model from this epoch's metrics.
        *([evaluator] if evaluator else []),
        # Before the checkpointer: a crash between the two leaves a log line newer than `latest`,
        # which resume trims and redoes, instead of a checkpointed epoch missing from train_log.jsonl.
        LoggerHook(out_dir, glob["print_batch_step"], glob["use_visualdl"]),
        # Last: it saves the state (and the best/final record) every hook above produced this epoch.
        CheckpointHook(model_dir_of(cfg), glob["save_interval"],
                       metrics_of=evaluator.metrics_of if evaluator else (lambda epoch: None),
                       metrics_path=os.path.join(out_dir, "eval_metrics.json")),
    ]
    trainer = Trainer(wrapped, optimizer, scheduler, objective, train_set, relabel,
                      functools.partial(_train_loader, cfg, train_set), hooks, int(glob["epochs"]), iters,
                      precision=Precision(amp))
    if glob.get("checkpoints"):
        resume(trainer, glob["checkpoints"], out_dir)
    return trainer


def resume(trainer: Trainer, path: str, out_dir: str) -> None:
    """Restore ``trainer`` from a checkpoint set (or the newest complete one beside it)."""
    from ..utils.checkpoint import load_resume_checkpoint

    used, (model_state, opt_state, states) = load_resume_checkpoint(path, warn=logger.warning)
    trainer.load_state_dict({"model": model_state, "optimizer": opt_state, "training": states})
    done, iters = trainer.start_epoch - 1, trainer.iters_per_epoch
    if trainer.global_iter != done * iters:  # iters_per_epoch changed: progress t/T must stay in [0, 1]
        logger.warning(f"{used} holds {done} epochs in {trainer.global_iter} steps, but DataLoader.Train.sampler."
                       f"iters_per_epoch is now {iters}: the ISE schedule continues from step {done * iters}")
        trainer.global_iter = done * iters
    log = os.path.join(out_dir, "train_log.jsonl")
    if os.path.exists(log):  # drop the epochs after the checkpoint: they will be redone
        kept = [r for r in read_train_log(out_dir) if r.get("epoch", 0) <= done]
        with atomic_write(log, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
    logger.info(f"resumed from {used}: epoch {done} done, global step {trainer.global_iter}")
