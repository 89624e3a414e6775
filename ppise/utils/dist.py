"""Distributed helpers that degrade to no-ops in a single process."""
from __future__ import annotations

import functools
import os
from typing import Any, List


def world_size() -> int:
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def rank() -> int:
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def is_main() -> bool:
    return rank() == 0


def init_distributed() -> None:
    """Initialise the collective context once when launched with several processes."""
    if world_size() > 1:
        import paddle.distributed as dist

        if not dist.is_initialized():
            dist.init_parallel_env()


def barrier() -> None:
    if world_size() > 1:
        import paddle.distributed as dist

        dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """Gather any picklable object from every rank (rank order)."""
    if world_size() == 1:
        return [obj]
    import paddle.distributed as dist

    objs: List[Any] = []
    dist.all_gather_object(objs, obj)
    return list(objs)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if world_size() == 1:
        return obj
    import paddle.distributed as dist

    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_with_grad(tensor):
    """Concatenate ``tensor`` (same shape on every rank) from every rank along axis 0, in rank
    order, differentiably: each rank's rows receive the gradient of the sum of all ranks' losses
    (the mean loss once ``paddle.DataParallel`` averages parameter gradients)."""
    if world_size() == 1:
        return tensor
    return _gather_layer().apply(tensor)


def all_gather(tensor):
    """Concatenate ``tensor`` from every rank along axis 0 (rank order); no gradient."""
    if world_size() == 1:
        return tensor
    import paddle
    import paddle.distributed as dist

    parts: List[Any] = []
    dist.all_gather(parts, tensor.detach())
    return paddle.concat(parts, axis=0)


@functools.lru_cache(maxsize=1)
def _gather_layer():
    """The PyLayer behind :func:`all_gather_with_grad` (built on first use)."""
    import paddle
    import paddle.distributed as dist
    from paddle.autograd import PyLayer

    class GatherWithGrad(PyLayer):
        @staticmethod
        def forward(ctx, tensor):
            ctx.rows = int(tensor.shape[0])
            parts: List[Any] = []
            dist.all_gather(parts, tensor)
            return paddle.concat(parts, axis=0)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.clone()
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
            start = rank() * ctx.rows
            return grad[start:start + ctx.rows]

    return GatherWithGrad
