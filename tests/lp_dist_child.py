"""Child of tests/test_lp_distributed.py, run under paddle.distributed.launch: one rank's LP loss."""
import os
import sys

import numpy as np
import paddle

from ppise.loss.label_preserving import LabelPreservingLoss
from ppise.utils import dist


def global_batch(world: int, ids_per_rank: int = 3, k: int = 4, dim: int = 8, seed: int = 0):
    """A P x K global batch (identities contiguous, split by identity over ranks) and one support each."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(world * ids_per_rank) * 7 % 23, k).astype(np.int64)
    feats = rng.normal(size=(labels.size, dim)).astype(np.float32)
    sup = rng.normal(size=(labels.size, dim)).astype(np.float32)
    sup /= np.linalg.norm(sup, axis=1, keepdims=True)
    return feats, sup, labels


def main(out_dir: str) -> None:
    paddle.set_device("cpu")
    dist.init_distributed()
    world, rank = dist.world_size(), dist.rank()
    feats, sup, labels = global_batch(world)
    rows = slice(rank * labels.size // world, (rank + 1) * labels.size // world)
    f = paddle.to_tensor(feats[rows], stop_gradient=False)
    s = paddle.to_tensor(sup[rows], stop_gradient=False)
    y = paddle.to_tensor(labels[rows])
    loss = LabelPreservingLoss(temperature=0.6)(f, s, y, y)
    loss.backward()
    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), loss=float(loss), f_grad=f.grad.numpy(), s_grad=s.grad.numpy(),
             world=world)


if __name__ == "__main__":
    main(sys.argv[1])
