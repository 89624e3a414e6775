"""One ResNet-50 re-ID training step on CPU: Paddle settings (and PyTorch, when importable) side by side.

The network is ``configs/ise_market.yaml``'s: ResNet50_last_stage_stride1 + BNNeck (2048-d),
256x128 input, batch 32, Adam (lr 3.5e-4, weight decay 5e-4), a plain loss on the features
(``mean(features ** 2)``): forward, backward and optimizer step, best of ``--steps`` after
one warm-up step. Each setting runs in a fresh process (thread pools and oneDNN are
process-wide):

- ``paddle 1t`` / ``paddle 2t``: dygraph fp32 with 1 / 2 intra-op threads, oneDNN off;
- ``... +onednn``: the same with ``FLAGS_use_mkldnn`` on (ppise's CPU default);
- ``to_static``: ``ppise.engine.amp.apply_to_static`` (what ``Global.to_static: True`` does),
  with oneDNN off: Paddle 3.3's static backward aborts in oneDNN's ``pool2d_grad``;
- ``bf16 O1``: the trainer's ``Precision`` step with ``auto_cast(dtype='bfloat16')`` (what
  ``AMP: {dtype: bfloat16}`` does on a GPU). On CPU Paddle 3.3's auto_cast has no effect
  (and there is no bfloat16 CPU conv2d kernel), so this row measures float32 again;
- ``torch Nt``: the same network and step in PyTorch (``torch.set_num_threads(N)``), when
  ``import torch`` works; point ``--torch-path`` at a ``pip install --target`` directory to
  use a throwaway install (torch is not a ppise dependency).

Ratios are to the fastest PyTorch setting (or, without torch, to ``paddle 1t``) measured in
the same run. On a shared machine, run it under the heavy-job lock and read the ratios, not
the absolute seconds:

    flock /tmp/ppise_heavy.lock python benchmarks/bench_train_step.py --torch-path /tmp/torch_cpu
    python benchmarks/bench_train_step.py --model demo --settings "paddle 1t" "paddle 2t"
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

ARCH = {
    "resnet50": ({"name": "RecModel", "Backbone": {"name": "ResNet50_last_stage_stride1", "pretrained": False},
                  "BackboneStopLayer": {"name": "avg_pool"}, "Neck": {"name": "BNNeck", "num_features": 2048}},
                 (3, 256, 128)),
    "demo": ({"name": "RecModel", "Backbone": {"name": "ResNetMini", "pretrained": False, "stem_channels": 16,
                                                "widths": [16, 32, 64, 128], "out_channels": 256},
              "Neck": {"name": "BNNeck", "num_features": 256}}, (3, 64, 32)),
}
# name -> (framework, threads, oneDNN, mode)
SETTINGS = {
    "paddle 1t": ("paddle", 1, False, "dygraph"),
    "paddle 1t +onednn": ("paddle", 1, True, "dygraph"),
    "paddle 2t": ("paddle", 2, False, "dygraph"),
    "paddle 2t +onednn": ("paddle", 2, True, "dygraph"),
    "paddle 2t to_static": ("paddle", 2, False, "to_static"),
    "paddle 2t bf16 O1": ("paddle", 2, True, "bf16"),
    "torch 1t": ("torch", 1, False, "eager"),
    "torch 2t": ("torch", 2, False, "eager"),
}


def _paddle_step(model: str, threads: int, onednn: bool, mode: str, batch: int, steps: int):
    import numpy as np
    import paddle
    from paddle.base import core

    core.set_num_threads(threads)
    paddle.set_flags({"FLAGS_use_mkldnn": onednn})
    paddle.set_device("cpu")
    sys.path.insert(0, ROOT)
    from ppise.arch import build_model
    from ppise.engine.amp import AmpSettings, Precision, apply_to_static

    arch, shape = ARCH[model]
    paddle.seed(0)
    net = build_model(arch)
    net.train()
    if mode == "to_static":
        apply_to_static(net, {"to_static": True}, training=True)  # as the trainer does
    # The trainer's step object; bf16 is forced on (amp_settings would refuse it on CPU) to time auto_cast here.
    precision = Precision(AmpSettings(enabled=True, dtype="bfloat16", level="O1") if mode == "bf16" else None)
    opt = paddle.optimizer.Adam(learning_rate=3.5e-4, parameters=net.parameters(), weight_decay=5e-4)
    x = paddle.to_tensor(np.random.RandomState(0).rand(batch, *shape).astype("float32"))
    times = []
    for _ in range(steps + 1):  # the first step warms up kernels, oneDNN primitives, the static program
        start = time.perf_counter()
        loss = precision.forward(net, x)["features"].pow(2).mean()  # features come back float32
        precision.backward(loss)
        precision.step(opt)
        opt.clear_grad()
        float(loss)
        times.append(time.perf_counter() - start)
    return min(times[1:]), float(loss)


def _torch_net(model: str):
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride, project):
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if project else None

        def forward(self, x):
            return torch.relu(self.body(x) + (self.short(x) if self.short is not None else x))

    class Net(nn.Module):  # ResNet-50 (stride on the 3x3, like PaddleClas "vb"), last stage stride 1, BNNeck
        def __init__(self):
            super().__init__()
            layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
            cin = 64
            for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 1)):
                for i in range(blocks):
                    layers.append(Bottleneck(cin, width, stride if i == 0 else 1, i == 0))
                    cin = width * 4
            self.backbone = nn.Sequential(*layers)
            self.neck = nn.BatchNorm1d(2048)
            self.neck.bias.requires_grad_(False)

        def forward(self, x):
            return {"features": self.neck(torch.flatten(nn.functional.adaptive_avg_pool2d(self.backbone(x), 1), 1))}

    if model != "resnet50":
        raise SystemExit("the PyTorch side implements the resnet50 network only")
    return Net()


def _torch_step(model: str, threads: int, batch: int, steps: int):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = _torch_net(model).train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=3.5e-4, weight_decay=5e-4)
    _, shape = ARCH[model]
    x = torch.from_numpy(np.random.RandomState(0).rand(batch, *shape).astype("float32"))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = net(x)["features"].pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        float(loss)
        times.append(time.perf_counter() - start)
    return min(times[1:]), float(loss), torch.__version__


def worker(args) -> None:
    framework, threads, onednn, mode = SETTINGS[args.worker]
    if framework == "torch":
        if args.torch_path:
            sys.path.insert(0, args.torch_path)
        seconds, loss, version = _torch_step(args.model, threads, args.batch, args.steps)
    else:
        import paddle

        seconds, loss = _paddle_step(args.model, threads, onednn, mode, args.batch, args.steps)
        version = paddle.__version__
    print(json.dumps({"seconds": seconds, "loss": loss, "version": version}))


def _torch_importable(path: str) -> bool:
    code = "import sys; sys.path.insert(0, sys.argv[1]) if sys.argv[1] else None; import torch"
    return subprocess.run([sys.executable, "-c", code, path or ""], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", choices=sorted(ARCH))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (best is reported)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--torch-path", default="", help="directory holding a throwaway torch install")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    settings = list(args.settings)
    if any(SETTINGS[s][0] == "torch" for s in settings) and (args.model != "resnet50" or not _torch_importable(args.torch_path)):
        print("torch settings skipped: " + ("PyTorch side is resnet50 only" if args.model != "resnet50" else "torch is not importable"))
        settings = [s for s in settings if SETTINGS[s][0] != "torch"]
    print(f"model {args.model}, batch {args.batch}, best of {args.steps} steps after 1 warm-up, load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at start", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FLAGS_use_mkldnn")}
    results = {}
    for name in settings:
        env["OMP_NUM_THREADS"] = str(SETTINGS[name][1])
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--model", args.model,
               "--batch", str(args.batch), "--steps", str(args.steps), "--torch-path", args.torch_path]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name:>22}: failed ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode})", flush=True)
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name:>22}: {results[name]['seconds']:7.3f} s  ({results[name]['version']}, "
              f"load {os.getloadavg()[0]:.2f})", flush=True)
    torch_best = min((r["seconds"] for n, r in results.items() if SETTINGS[n][0] == "torch"), default=None)
    base_name = "fastest torch" if torch_best else "paddle 1t"
    base = torch_best or results.get("paddle 1t", {}).get("seconds")
    if not base:
        return
    print(f"\n| setting | s / step | x {base_name} |\n| --- | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['seconds']:.3f} | {r['seconds'] / base:.2f} |")
    paddle_best = min(((r["seconds"], n) for n, r in results.items() if SETTINGS[n][0] == "paddle"), default=None)
    if paddle_best and torch_best:
        print(f"\nbest paddle setting: {paddle_best[1]} = {paddle_best[0] / torch_best:.2f}x the fastest torch step")


if __name__ == "__main__":
    main()
