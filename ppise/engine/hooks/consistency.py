"""RankConsistencyHook: make, and prove, every rank hold the same weights and memory.

The gradient all-reduce keeps parameters equal and the gathered update keeps the memory equal,
but not BatchNorm statistics: those are averaged after each epoch, then digests of every
tensor are compared across ranks (checked, not assumed).
"""
from __future__ import annotations

import hashlib

import numpy as np

from ...errors import TrainingError
from ...utils import dist
from ...utils.logger import logger
from ..trainer import Hook


def average_buffers(model) -> None:
    """All-reduce-average the non-trainable float tensors (BN running mean / variance)."""
    import paddle
    import paddle.distributed as pdist

    world = dist.world_size()
    # Paddle keeps BN running statistics as non-trainable parameters, others keep buffers.
    frozen = [p for p in model.parameters() if p.stop_gradient or not getattr(p, "trainable", True)]
    with paddle.no_grad():
        for buf in frozen + [b for b in model.buffers() if b is not None]:
            if not paddle.is_floating_point(buf):
                continue
            total = buf.clone()
            pdist.all_reduce(total, op=pdist.ReduceOp.SUM)
            buf.set_value(total / world)


def state_digest(trainer) -> dict:
    """SHA-1 of the model's parameters/buffers and of the objective's state (the cluster memory), bit for bit."""
    weights = hashlib.sha1()
    for name, tensor in sorted(trainer.net.state_dict().items()):
        weights.update(name.encode())
        weights.update(np.ascontiguousarray(tensor.numpy()).tobytes())
    memory = hashlib.sha1()
    for _, value in sorted(trainer.objective.state_dict().items()):
        memory.update(np.ascontiguousarray(value).tobytes())
    return {"weights": weights.hexdigest(), "memory": memory.hexdigest()}


class RankConsistencyHook(Hook):
    def after_epoch(self, trainer) -> None:
        if dist.world_size() == 1:
            return
        average_buffers(trainer.net)
        digests = dist.all_gather_object(state_digest(trainer))
        for key in ("weights", "memory"):
            values = {d[key] for d in digests}
            if len(values) != 1:
                raise TrainingError(f"epoch {trainer.epoch}: {key} differ across ranks ({sorted(values)}); data-parallel state diverged")
        trainer.epoch_record["ranks_consistent"] = True
        trainer.epoch_record["state_digest"] = digests[0]
        logger.info(f"epoch {trainer.epoch}: weights and memory identical on {len(digests)} ranks")
