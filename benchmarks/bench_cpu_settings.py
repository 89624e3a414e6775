"""Training-step and feature-extraction time on CPU: Paddle's defaults versus ppise's settings.

Each setting runs in a fresh process (thread pools and oneDNN are process-wide):
- ``default``: Paddle as installed (oneDNN flag off, thread pools unset);
- ``threads``: OMP/MKL threads = cores only;
- ``onednn``: ``FLAGS_use_mkldnn`` only;
- ``ppise``: what ``ppise.utils.device`` sets for ``Global.device: cpu`` (see its docstring).
Run it on an otherwise idle machine: oversubscribed cores distort thread-pool timings.

    python benchmarks/bench_cpu_settings.py --model resnet50 demo --batch 32 --steps 3 --phase train extract

``--phase extract`` times an eval-mode forward pass without gradients (what the cluster
hook and evaluation run over every image each epoch) instead of a training step.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

MODELS = {
    "resnet50": ({"name": "RecModel", "Backbone": {"name": "ResNet50_last_stage_stride1", "pretrained": False},
                  "BackboneStopLayer": {"name": "avg_pool"}, "Neck": {"name": "BNNeck", "num_features": 2048}}, (3, 256, 128)),
    "demo": ({"name": "RecModel", "Backbone": {"name": "ResNetMini", "pretrained": False, "stem_channels": 16,
                                                "widths": [16, 32, 64, 128], "out_channels": 256},
              "Neck": {"name": "BNNeck", "num_features": 256}}, (3, 64, 32)),
}


def worker(model: str, setting: str, batch: int, steps: int, phase: str = "train") -> None:
    sys.path.insert(0, ROOT)
    from ppise.utils.device import cpu_count, prepare_env, setup_device

    if setting == "threads":
        prepare_env({"device": "cpu", "cpu_threads": cpu_count()})
    elif setting == "ppise":
        prepare_env({"device": "cpu"})
    import numpy as np
    import paddle

    if setting == "ppise":
        setup_device({"device": "cpu"})
    elif setting == "threads":
        from paddle.base import core

        core.set_num_threads(cpu_count())
    elif setting == "onednn":
        paddle.set_flags({"FLAGS_use_mkldnn": True})
    from ppise.arch import build_model

    arch, shape = MODELS[model]
    net = build_model(arch)
    x = paddle.to_tensor(np.random.rand(batch, *shape).astype("float32"))
    times = []
    if phase == "extract":
        from ppise.utils.device import extraction_threads

        net.eval()
        with paddle.no_grad(), (extraction_threads() if setting == "ppise" else contextlib.nullcontext()):
            for _ in range(steps + 1):  # the first pass warms up kernels and oneDNN primitives
                start = time.perf_counter()
                net(x)["features"].numpy()
                times.append(time.perf_counter() - start)
        print(json.dumps({"seconds": min(times[1:])}))
        return
    net.train()
    opt = paddle.optimizer.Adam(learning_rate=3.5e-4, parameters=net.parameters(), weight_decay=5e-4)
    for _ in range(steps + 1):  # the first step warms up kernels and oneDNN primitives
        start = time.perf_counter()
        loss = net(x)["features"].pow(2).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": min(times[1:])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["resnet50", "demo"], choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--phase", nargs="+", default=["train"], choices=["train", "extract"])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.batch, args.steps, args.worker[2])
        return
    settings = ("default", "threads", "onednn", "ppise")
    print(f"{'model':>9} | {'phase':>7} | batch | " + " | ".join(f"{s + ' s':>10}" for s in settings) + " | ppise speed-up")
    for model in args.model:
        for phase in args.phase:
            seconds = {}
            for setting in settings:
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FLAGS_use_mkldnn")}
                cmd = [sys.executable, __file__, "--worker", model, setting, phase, "--batch", str(args.batch), "--steps", str(args.steps)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                seconds[setting] = json.loads(out.strip().splitlines()[-1])["seconds"]
            print(f"{model:>9} | {phase:>7} | {args.batch:5d} | " + " | ".join(f"{seconds[s]:10.3f}" for s in settings)
                  + f" | {seconds['default'] / seconds['ppise']:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
