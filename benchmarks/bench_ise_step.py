"""Cost of the ISE core per training iteration, and how it compares with a whole step.

Times (median over repeats, forward + backward):

1. ISE part at the reference size (batch 256 = 16 ids x 16, 2048-d, 700 clusters):
   ISEHead + LP loss + the support half of the cluster-memory loss, on features produced
   by a Linear layer so that backward is real; the Linear alone is timed too and
   subtracted to isolate ISE's own overhead.
2. The same LP loss written as a per-sample Python loop (the official ``CriterionLP``
   algorithm: per sample, hardest positive, per-identity hardest negative by reshaping
   the contiguous P x K negatives), to show what batching buys.
3. A whole training step of a demo-sized model at batch 64 x 3x128x64 with Adam: the
   ppise model if ``ppise.arch`` can build one, else ppise's ResNetMini backbone plus a
   BN neck, else a small stand-in conv net (the script says which one it used).

Usage: ``OMP_NUM_THREADS=2 python benchmarks/bench_ise_step.py [--repeats 10]``
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ppise.arch.head.ise import ISEHead  # noqa: E402
from ppise.loss import ClusterMemoryLoss, LabelPreservingLoss  # noqa: E402


def timeit(fn: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


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
    memory = ClusterMemoryLoss(num_features=dim, momentum=0.2, update="hard", use_support=True)
    memory.reset(unit(rng.normal(size=(clusters, dim))).astype(np.float32))
    return linear, inputs, labels, memory, ISEHead(topk=topk), LabelPreservingLoss()


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

    t_lin = timeit(linear_only, args.repeats)
    t_ise = timeit(with_ise, args.repeats)
    t_loop = timeit(loop_lp, max(2, args.repeats // 5), warmup=1)
    upd = timeit(lambda: memory.update(*memory.select_inputs(f.detach(), labels, s.detach(), ys)), args.repeats)
    print(f"[ISE @ B={batch}, D={dim}, C={clusters}, K={topk}]")
    print(f"  Linear {dim}->{dim} fwd+bwd alone          : {t_lin * 1e3:8.2f} ms")
    print(f"  + ISEHead + CM(supports) + LP, batched   : {t_ise * 1e3:8.2f} ms  (ISE overhead {1e3 * (t_ise - t_lin):.2f} ms)")
    print(f"  + ISEHead + CM(supports) + LP, loop LP   : {t_loop * 1e3:8.2f} ms  (ISE overhead {1e3 * (t_loop - t_lin):.2f} ms)")
    print(f"  loop / batched (overheads)               : {(t_loop - t_lin) / max(t_ise - t_lin, 1e-9):8.1f} x")
    print(f"  memory hard update [f; s] (no grad)      : {upd * 1e3:8.2f} ms")
    return t_lin, t_ise, t_loop


class _StandInNet(nn.Layer):
    """Small conv net used only when no ppise backbone is importable."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        chans = [3, 32, 64, 128, dim]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2D(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2D(cout), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2D(1), nn.Flatten())
        self.bn = nn.BatchNorm1D(dim)
        self.out_channels = dim

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.bn(self.body(x))


def demo_model() -> Tuple[nn.Layer, int, str]:
    try:  # the full ppise model, once ppise.arch offers a builder and the demo config exists
        from ppise.arch import build_model  # type: ignore[attr-defined]
        from ppise.config import load_yaml

        cfg_path = os.path.join(os.path.dirname(__file__), "..", "configs", "ise_demo.yaml")
        cfg = load_yaml(cfg_path)
        model = build_model(cfg["Arch"])
        dim = int(model(paddle.zeros([2, 3, 128, 64])).shape[-1])
        return model, dim, f"ppise.arch.build_model(configs/ise_demo.yaml Arch: {cfg['Arch'].get('Backbone')})"
    except Exception as err:  # noqa: BLE001  (fallbacks below say what was used)
        reason = f"{type(err).__name__}: {err}"
    try:
        from ppise.arch.backbone import ResNetMini

        backbone = ResNetMini()
        dim = backbone.out_channels
        model = nn.Sequential(backbone, nn.BatchNorm1D(dim))
        return model, dim, f"stand-in: ppise ResNetMini (default widths) + BN neck (no full model builder: {reason})"
    except Exception as err:  # noqa: BLE001
        model = _StandInNet()
        return model, model.out_channels, f"stand-in: 4-layer conv net (ppise.arch unavailable: {err})"


def bench_step(args, t_ise_ref: float) -> None:
    batch, ids, clusters = 64, 16, 700
    model, dim, what = demo_model()
    rng = np.random.default_rng(1)
    images = paddle.to_tensor(rng.normal(size=(batch, 3, 128, 64)).astype(np.float32))
    labels = paddle.to_tensor(np.repeat(rng.choice(clusters, ids, replace=False), batch // ids).astype(np.int64))
    memory = ClusterMemoryLoss(num_features=dim, update="hard")
    memory.reset(unit(rng.normal(size=(clusters, dim))).astype(np.float32))
    head, lp = ISEHead(topk=1), LabelPreservingLoss()
    opt = paddle.optimizer.Adam(learning_rate=3.5e-4, parameters=model.parameters(), weight_decay=5e-4)
    model.train()

    def step(use_ise: bool) -> Callable[[], None]:
        def run() -> None:
            f = model(images)
            if use_ise:
                s, ys, _ = head(f, labels, memory.memory, (1000, 28000))
                x, y = memory.select_inputs(f, labels, s, ys)
                loss = memory(x, y) + 0.1 * lp(f, s, labels, ys)
            else:
                x, y = f, labels
                loss = memory(x, y)
            loss.backward()
            opt.step()
            opt.clear_grad()
            memory.update(x.detach(), y)
        return run

    reps = max(3, args.repeats // 2)
    t_cc = timeit(step(False), reps, warmup=1)
    t_full = timeit(step(True), reps, warmup=1)
    print(f"[whole step @ B={batch} x 3x128x64, Adam, D={dim}, C={clusters}] model: {what}")
    print(f"  cluster-contrast step (no ISE)           : {t_cc * 1e3:8.2f} ms")
    print(f"  ISE step (head + CM[f;s] + LP + update)  : {t_full * 1e3:8.2f} ms  (ISE adds {100 * (t_full - t_cc) / t_cc:.1f} %)")
    print(f"  ISE part @ B=256/2048-d vs this step     : {t_ise_ref / t_full:8.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    paddle.set_device("cpu")
    paddle.seed(0)
    print(f"paddle {paddle.__version__}, device cpu, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    _, t_ise, _ = bench_ise(args)
    bench_step(args, t_ise)


if __name__ == "__main__":
    main()
