"""Cost of the ISE core per training iteration, and how it compares with a whole step.

Times (best of the repeats, forward + backward):

1. ISE part at the reference size (batch 256 = 16 ids x 16, 2048-d, 700 clusters):
   ISESupport + LP loss + the support half of the cluster-memory loss, on features produced
   by a Linear layer so that backward is real; the Linear alone is timed too and
   subtracted to isolate ISE's own overhead.
2. The same LP loss written as a per-sample Python loop (the official ``CriterionLP``
   algorithm: per sample, hardest positive, per-identity hardest negative by reshaping
   the contiguous P x K negatives), to show what batching buys.
3. A whole training step of the demo model (configs/ise_demo.yaml) at batch 64 with Adam, with
   the CPU threads and oneDNN setting tools/train.py picks for that config: the
   ppise model if ``ppise.arch`` can build one, else ppise's ResNetMini backbone plus a
   BN neck, else a small stand-in conv net (the script says which one it used).

Usage: ``OMP_NUM_THREADS=2 python benchmarks/bench_ise_step.py [--repeats 10]``
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ppise.loss import ClusterContrastObjective, ClusterMemoryLoss, ISESupport, LabelPreservingLoss  # noqa: E402
from ppise.utils.arrays import l2_normalize  # noqa: E402


def timeit(fns: Dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> Dict[str, float]:
    """Best wall time of each function, run interleaved (round-robin).

    On a shared CPU the load changes from second to second; interleaving exposes every
    variant to the same load and the minimum is the least noisy estimate of the cost.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def loop_lp_loss(feats: paddle.Tensor, supports: paddle.Tensor, labels: paddle.Tensor,
                 support_labels: paddle.Tensor, group_size: int, tau: float = 0.6) -> paddle.Tensor:
    """Per-sample loop LP loss (official algorithm; needs contiguous equal-size identities)."""
    f = F.normalize(feats, axis=1)
    exp_sim = paddle.exp(paddle.matmul(f, supports, transpose_y=True) / tau)
    ys = support_labels.numpy()
    total = paddle.zeros([], dtype=feats.dtype)
    for i, y in enumerate(labels.numpy().tolist()):
        row = exp_sim[i]
        pos_idx = paddle.to_tensor(np.flatnonzero(ys == y))
        neg_idx = paddle.to_tensor(np.flatnonzero(ys != y))
        pos = paddle.gather(row, pos_idx).min()
        neg = paddle.gather(row, neg_idx).reshape([-1, group_size]).max(axis=1).sum()
        total = total - paddle.log(pos / (pos + neg + 1e-6) + 1e-6)
    return total / len(labels)


def ise_setup(batch: int, ids: int, dim: int, clusters: int, topk: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    linear = nn.Linear(dim, dim)
    inputs = paddle.to_tensor(rng.normal(size=(batch, dim)).astype(np.float32))
    labels = paddle.to_tensor(np.repeat(rng.choice(clusters, ids, replace=False), batch // ids).astype(np.int64))
    memory = ClusterMemoryLoss(num_features=dim, momentum=0.2, update="hard")
    memory.reset(l2_normalize(rng.normal(size=(clusters, dim))))
    return linear, inputs, labels, memory, ISESupport(topk=topk), LabelPreservingLoss()


def bench_ise(args) -> Tuple[float, float, float]:
    batch, ids, dim, clusters, topk = 256, 16, 2048, 700, 1
    linear, inputs, labels, memory, head, lp = ise_setup(batch, ids, dim, clusters, topk)

    def linear_only() -> None:
        linear.clear_gradients()
        f = linear(inputs)
        (f * f).mean().backward()

    def with_ise() -> None:
        linear.clear_gradients()
        f = linear(inputs)
        supports, support_labels, _ = head(f, labels, memory.memory, (1000, 28000))
        loss = memory(supports, support_labels) + 0.1 * lp(f, supports, labels, support_labels)
        (loss + (f * f).mean()).backward()

    def loop_lp() -> None:
        linear.clear_gradients()
        f = linear(inputs)
        supports, support_labels, _ = head(f, labels, memory.memory, (1000, 28000))
        loss = memory(supports, support_labels) + 0.1 * loop_lp_loss(
            f, supports, labels, support_labels, group_size=topk * batch // ids)
        (loss + (f * f).mean()).backward()

    # Same value both ways (sanity check before timing).
    f = linear(inputs)
    s, ys, _ = head(f, labels, memory.memory, 0.5)
    fast = float(lp(f, s, labels, ys))
    slow = float(loop_lp_loss(f, s, labels, ys, group_size=topk * batch // ids))
    assert abs(fast - slow) < 1e-4 * max(1.0, abs(slow)), (fast, slow)

    best = timeit({"linear": linear_only, "batched": with_ise, "loop": loop_lp}, args.repeats)
    t_lin, t_ise, t_loop = best["linear"], best["batched"], best["loop"]
    # The LP loss alone (fwd + bwd), leaf tensors with grad: batched vs per-sample loop.
    f_leaf = paddle.to_tensor(f.numpy(), stop_gradient=False)
    s_leaf = paddle.to_tensor(s.numpy(), stop_gradient=False)
    group = topk * batch // ids
    lp_only = timeit({
        "batched": lambda: lp(f_leaf, s_leaf, labels, ys).backward(),
        "loop": lambda: loop_lp_loss(f_leaf, s_leaf, labels, ys, group_size=group).backward(),
    }, args.repeats)
    x_upd, y_upd = paddle.concat([f.detach(), s.detach()]), paddle.concat([labels, ys])
    upd = timeit({"update": lambda: memory.update(x_upd, y_upd)}, args.repeats)["update"]
    print(f"[ISE @ B={batch}, D={dim}, C={clusters}, K={topk}]")
    print(f"  Linear {dim}->{dim} fwd+bwd alone          : {t_lin * 1e3:8.2f} ms")
    print(f"  + ISESupport + CM(supports) + LP, batched   : {t_ise * 1e3:8.2f} ms  "
          f"(ISE overhead {1e3 * (t_ise - t_lin):.2f} ms)")
    print(f"  + ISESupport + CM(supports) + LP, loop LP   : {t_loop * 1e3:8.2f} ms  "
          f"(ISE overhead {1e3 * (t_loop - t_lin):.2f} ms)")
    print(f"  loop / batched (overheads)               : {(t_loop - t_lin) / max(t_ise - t_lin, 1e-9):8.1f} x")
    print(f"  LP loss alone fwd+bwd, batched           : {lp_only['batched'] * 1e3:8.2f} ms")
    print(f"  LP loss alone fwd+bwd, per-sample loop   : {lp_only['loop'] * 1e3:8.2f} ms  "
          f"({lp_only['loop'] / lp_only['batched']:.1f} x slower)")
    print(f"  memory hard update [f; s] (no grad)      : {upd * 1e3:8.2f} ms")
    return t_lin, t_ise, t_loop


def _features(out) -> paddle.Tensor:
    """RecModel returns a dict (``features``); stand-ins return the tensor."""
    return out["features"] if isinstance(out, dict) else out


def demo_model() -> Tuple[nn.Layer, int, str, List[int]]:
    """The demo config's model and input shape (what configs/ise_demo.yaml trains)."""
    from ppise.arch import build_model
    from ppise.config import get_config
    from ppise.utils.device import setup_device, tune_cpu_threads

    cfg = get_config(os.path.join(os.path.dirname(__file__), "..", "configs", "ise_demo.yaml"))
    shape = list(cfg["Global"]["image_shape"])
    setup_device(cfg["Global"])  # threads and oneDNN as tools/train.py sets them for this config
    model = build_model(cfg["Arch"])
    tune_cpu_threads(model, cfg["Global"])
    dim = int(_features(model(paddle.zeros([2] + shape))).shape[-1])
    return model, dim, f"configs/ise_demo.yaml Arch ({cfg['Arch']['Backbone']['name']})", shape


def bench_step(args, ise_overhead_ref: float) -> None:
    batch, ids, clusters = 64, 16, 700
    model, dim, what, shape = demo_model()
    rng = np.random.default_rng(1)
    images = paddle.to_tensor(rng.normal(size=(batch, *shape)).astype(np.float32))
    labels = paddle.to_tensor(np.repeat(rng.choice(clusters, ids, replace=False), batch // ids).astype(np.int64))
    centroids = l2_normalize(rng.normal(size=(clusters, dim)))
    objectives = {  # what the trainer runs: objective.losses -> sum -> backward -> step -> objective.update
        False: ClusterContrastObjective(ClusterMemoryLoss(num_features=dim, update="hard")),
        True: ClusterContrastObjective(ClusterMemoryLoss(num_features=dim, update="hard"), ISESupport(topk=1),
                                       LabelPreservingLoss()),
    }
    for objective in objectives.values():
        objective.reset(centroids)
    opt = paddle.optimizer.Adam(learning_rate=3.5e-4, parameters=model.parameters(), weight_decay=5e-4)
    model.train()

    def step(use_ise: bool) -> Callable[[], None]:
        objective = objectives[use_ise]

        def run() -> None:
            losses = objective.losses({"features": _features(model(images))}, labels, 1000 / 28000)
            paddle.add_n(list(losses.values())).backward()
            opt.step()
            opt.clear_grad()
            objective.update()
        return run

    best = timeit({"cc": step(False), "ise": step(True)}, max(3, args.repeats))
    t_cc, t_full = best["cc"], best["ise"]
    print(f"[whole step @ B={batch} x {'x'.join(map(str, shape))}, Adam, D={dim}, C={clusters}] model: {what}")
    print(f"  cluster-contrast step (no ISE)           : {t_cc * 1e3:8.2f} ms")
    print(f"  ISE step (supports + CM[f;s] + LP + update)  : {t_full * 1e3:8.2f} ms  "
          f"(ISE adds {100 * (t_full - t_cc) / t_cc:.1f} %)")
    print(f"  ISE overhead @ B=256/2048-d / this step  : {ise_overhead_ref / t_full:8.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    paddle.set_device("cpu")
    paddle.seed(0)
    print(f"paddle {paddle.__version__}, device cpu, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (figures scale with it)")
    t_lin, t_ise, _ = bench_ise(args)
    bench_step(args, t_ise - t_lin)


if __name__ == "__main__":
    main()
