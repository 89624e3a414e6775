"""Deploy speed on CPU: dygraph versus Paddle Inference, and gallery query latency per index type.

1. Images/s of the retrieval branch (no ISE head) at batch 1 and 32 for the demo model
   (ResNetMini + BNNeck, 3x128x64) and ResNet-50 (ResNet50_last_stage_stride1 + BNNeck,
   3x256x128), random weights: dygraph (``paddle.no_grad``, eval, oneDNN as ppise's
   ``setup_device`` sets it) versus the exported PIR model in Paddle Inference with oneDNN
   on and off. Input arrays are preprocessed already: this times the network only.
2. Query latency (ms per single query, faiss, inner product) over galleries of random
   L2-normalised 2048-d vectors shaped like a re-ID gallery: N/10 random "identity"
   directions, each gallery vector one of them plus Gaussian noise (cosine to its identity
   about 0.8), queries fresh noisy samples of gallery identities. (Structureless i.i.d.
   vectors are the worst case for any approximate index: every neighbour is almost equally
   far, and recall@10 collapses to ~0.35 for both IVF and HNSW here.) Indexes: ``Flat``
   (exact), ``IVF`` (nlist = sqrt(N), nprobe 16) and ``HNSW`` (M 16, efSearch 64), with
   recall@10 of the approximate ones against the exact top 10. Sizes: 10k and 100k; 1M
   (8 GB of float32 per copy) only with ``--with-1m`` (Flat and IVF only: an HNSW graph over
   1M x 2048 takes hours on 2 cores).

Usage: ``python benchmarks/bench_inference.py [--repeats 5] [--threads 2] [--with-1m] [--skip-models]``
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ppise.utils.arrays import l2_normalize  # noqa: E402

DEMO_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "ise_demo.yaml")


def median_seconds(fn: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def resnet50_config(demo_cfg: Dict) -> Dict:
    cfg = copy.deepcopy(demo_cfg)
    cfg["Global"]["image_shape"] = [3, 256, 128]
    cfg["Arch"] = {"name": "RecModel", "infer_output_key": "features",
                   "Backbone": {"name": "ResNet50_last_stage_stride1", "pretrained": False},
                   "BackboneStopLayer": {"name": "avg_pool"}, "Neck": {"name": "BNNeck", "num_features": 2048}}
    for split in ("Query", "Gallery"):
        cfg["DataLoader"]["Eval"][split]["dataset"]["transform_ops"][0]["ResizeImage"]["size"] = [128, 256]
    return cfg


def bench_models(threads: int, repeats: int) -> List[Dict]:
    import paddle

    from ppise.config import get_config
    from ppise.deploy.export import _inference_net, export_model
    from ppise.deploy.predictor import RecPredictor
    from ppise.engine.builder import build_model_from_config
    from ppise.utils.device import setup_device

    demo = get_config(DEMO_CONFIG)
    demo["Global"]["cpu_threads"] = threads
    setup_device(demo["Global"])  # oneDNN on, threads pinned: ppise's dygraph CPU default
    rows = []
    for name, cfg in (("demo ResNetMini 128x64", demo), ("ResNet-50 s1 + BNNeck 256x128", resnet50_config(demo))):
        with tempfile.TemporaryDirectory() as out_dir:
            cfg["Global"]["save_inference_dir"] = out_dir
            cfg["Global"]["export_format"] = "pir"
            export_model(cfg)
            net = _inference_net(build_model_from_config(cfg))  # same architecture; weights do not change speed
            predictors = {onednn: RecPredictor(out_dir, batch_size=32, enable_mkldnn=onednn, cpu_num_threads=threads,
                                               transform_ops=[]) for onednn in (True, False)}
            for batch in (1, 32):
                x = np.random.RandomState(0).standard_normal([batch] + cfg["Global"]["image_shape"]).astype(np.float32)
                tensor = paddle.to_tensor(x)

                def dygraph() -> None:
                    with paddle.no_grad():
                        net(tensor).numpy()

                reps = repeats if batch == 32 else repeats * 4
                row = {"model": name, "batch": batch, "dygraph": batch / median_seconds(dygraph, reps)}
                for onednn, pred in predictors.items():
                    row[f"inference_onednn_{'on' if onednn else 'off'}"] = batch / median_seconds(
                        lambda: pred.run(x), reps)
                rows.append(row)
                print(f"  {name} batch {batch}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()
                                                              if isinstance(v, float)) + " img/s", flush=True)
            del predictors, net
            gc.collect()
    return rows


NOISE = 0.75  # norm of the per-image noise added to a unit identity direction: cosine ~0.8


def reid_like(n: int, dim: int, num_queries: int, seed: int):
    """(gallery [n, dim], queries [num_queries, dim]): noisy samples of n/10 identity directions."""
    rng = np.random.default_rng(seed)
    ids = l2_normalize(rng.standard_normal((max(1, n // 10), dim), dtype=np.float32))
    scale = np.float32(NOISE / np.sqrt(dim))
    gallery = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):  # chunks: no temporaries the size of the whole gallery
        m = min(65536, n - start)
        noise = rng.standard_normal((m, dim), dtype=np.float32) * scale
        gallery[start:start + m] = l2_normalize(ids[(start + np.arange(m)) % len(ids)] + noise)
    picked = rng.choice(len(ids), num_queries, replace=False)
    queries = l2_normalize(ids[picked] + rng.standard_normal((num_queries, dim), dtype=np.float32) * scale)
    return gallery, queries


def bench_index(sizes: List[int], dim: int, threads: int, num_queries: int = 50) -> List[Dict]:
    import faiss

    from ppise.deploy.gallery import build_index

    faiss.omp_set_num_threads(threads)
    rows = []
    for n in sizes:
        gallery, queries = reid_like(n, dim, num_queries, seed=n)
        methods = ["Flat", "IVF"] + (["HNSW"] if n <= 100_000 else [])
        exact = None
        for method in methods:
            start = time.perf_counter()
            params = {"nlist": max(1, int(round(np.sqrt(n)))), "nprobe": 16, "hnsw_m": 16, "ef_search": 64}
            index = build_index(gallery, method, **params)
            build_s = time.perf_counter() - start
            latency = []
            found = []
            for q in queries:  # one query at a time: the latency a search request sees
                t = time.perf_counter()
                _, rows_k = index.search(q[None], 10)
                latency.append(time.perf_counter() - t)
                found.append(rows_k[0])
            found = np.asarray(found)
            if method == "Flat":
                exact = found
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
            rows.append({"gallery": n, "index": method, "build_s": build_s, "ms_per_query": 1000 * float(np.median(latency)),
                         "recall@10": recall})
            print(f"  {n} x {dim} {method}: build {build_s:.1f}s, {rows[-1]['ms_per_query']:.3f} ms/query, "
                  f"recall@10 {recall:.3f}", flush=True)
            del index
            gc.collect()
        del gallery
        gc.collect()
    return rows


def print_tables(model_rows: List[Dict], index_rows: List[Dict]) -> None:
    if model_rows:
        print("\nimages/s (CPU)                 | batch | dygraph | PI oneDNN on | PI oneDNN off | best PI / dygraph")
        for r in model_rows:
            best = max(r["inference_onednn_on"], r["inference_onednn_off"])
            print(f"{r['model']:<30} | {r['batch']:>5} | {r['dygraph']:>7.1f} | {r['inference_onednn_on']:>12.1f} | "
                  f"{r['inference_onednn_off']:>13.1f} | {best / r['dygraph']:>6.2f}x")
    if index_rows:
        print("\ngallery (2048-d) | index | build s | ms/query | recall@10 | speed-up vs Flat")
        flat = {r["gallery"]: r["ms_per_query"] for r in index_rows if r["index"] == "Flat"}
        for r in index_rows:
            print(f"{r['gallery']:>16} | {r['index']:<5} | {r['build_s']:>7.1f} | {r['ms_per_query']:>8.3f} | "
                  f"{r['recall@10']:>9.3f} | {flat[r['gallery']] / r['ms_per_query']:>6.1f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--with-1m", action="store_true", help="also a 1M x 2048 gallery (needs ~9 GB free RAM)")
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--skip-index", action="store_true")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    model_rows = [] if args.skip_models else bench_models(args.threads, args.repeats)
    sizes = [10_000, 100_000] + ([1_000_000] if args.with_1m else [])
    index_rows = [] if args.skip_index else bench_index(sizes, 2048, args.threads)
    print_tables(model_rows, index_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
