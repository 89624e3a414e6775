"""Distributed helpers that degrade to no-ops in a single process."""
from __future__ import annotations

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
