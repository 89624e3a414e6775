"""Speed and memory of ppise's pseudo-label engine (kNN -> sparse Jaccard -> DBSCAN).

Each (N, knn) case runs in a fresh subprocess so its peak RSS is its own. Features are
synthetic re-ID-like unit vectors: identities of ~17 images (Market-1501 has 751 x 17),
grouped in look-alike families and seen by 6 cameras, noisy enough that DBSCAN errs.

    python benchmarks/bench_pseudo_label.py --n 12936 32621 100000 --knn exact ivf --cache /tmp/ppise_exact

The exact kNN at N = 100,000 takes 10+ minutes on 2 cores: with ``--cache`` it runs once
and later runs compare against its stored labels and neighbour lists (recall@k1, ARI).

Beside each time it prints the floor the run's GEMM rate implies: 2 N^2 D flops (one full
similarity product) at the best rate measured in that case's process by any available
matrix-product backend (``ppise.cluster.gemm_backend``), and the ratio to it; and it names
the backend the kNN chose and the BLAS kernel (OpenBLAS's ``architecture``). To see the
generic-kernel case, start it with ``OPENBLAS_CORETYPE=Prescott``; ``--gemm`` forces a backend.

``--dense`` also runs the straightforward dense implementation (tests/dense_jaccard_reference.py
+ DBSCAN on the dense matrix) for N <= --dense-max and prints ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from ppise.utils.arrays import l2_normalize  # noqa: E402


def make_features(
    n: int,
    dim: int = 2048,
    seed: int = 0,
    per_id: int = 17,
    nuisance: float = 0.8,
    noise: float = 0.4,
    rank: int = 64,
    id_rank: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Unit float32 features (n x dim) and their true ids, generated in chunks (peak ~ the output).

    Image = identity centre (look-alike families of 4 share a direction) + camera offset
    + low-rank nuisance (``rank`` shared pose/background directions, per-image weights)
    + a little isotropic noise: CNN features vary along few directions, not all 2048.
    ``id_rank`` > 0 draws identity centres from an ``id_rank``-dimensional attribute space
    (clothes, colours...) instead of independent 2048-d directions, which is closer to
    trained features and is what approximate kNN (cells, graphs) relies on.
    """
    rng = np.random.default_rng(seed)
    num_ids = max(1, int(round(n / per_id)))
    ids = np.sort(rng.integers(0, num_ids, n))
    fam_of = np.arange(num_ids) // 4  # look-alike families of 4 identities
    fam_dirs = rng.standard_normal((fam_of.max() + 1, dim), dtype=np.float32)
    cams = rng.standard_normal((6, dim), dtype=np.float32)
    nuis = rng.standard_normal((rank, dim), dtype=np.float32) / np.sqrt(rank)
    attr_rng = np.random.default_rng((seed, 10, id_rank))  # own stream: id_rank=0 data stay unchanged
    attrs = attr_rng.standard_normal((max(id_rank, 1), dim), dtype=np.float32) / np.sqrt(max(id_rank, 1))
    x = np.empty((n, dim), dtype=np.float32)
    step = 8192
    for s in range(0, n, step):
        e = min(n, s + step)
        idc = ids[s:e]
        uniq, inv = np.unique(idc, return_inverse=True)
        id_rng = [np.random.default_rng((seed, int(u))) for u in uniq]
        own = np.stack([r.standard_normal(id_rank or dim, dtype=np.float32) for r in id_rng])
        if id_rank:
            own = own @ attrs
        centre = 0.6 * fam_dirs[fam_of[uniq]] + 0.8 * own
        chunk = centre[inv] + 0.35 * cams[rng.integers(0, 6, e - s)]
        chunk += (nuisance * rng.standard_normal((e - s, rank), dtype=np.float32)) @ nuis
        chunk += noise * rng.standard_normal((e - s, dim), dtype=np.float32)
        x[s:e] = l2_normalize(chunk)
    return x, ids


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cache_key(n: int, dim: int, id_rank: int) -> str:
    return f"exact_n{n}_d{dim}_r{id_rank}_s0"


def _recall(rank: np.ndarray, ref: np.ndarray) -> float:
    """Mean fraction of each exact neighbour list (self excluded) found in the approximate list."""
    n = rank.shape[0]
    base = np.arange(n, dtype=np.int64)[:, None] * n
    return float(np.isin((ref[:, 1:] + base).ravel(), (rank + base).ravel()).mean())


# The floor's product: (FLOOR_ROWS x D) @ (D x FLOOR_ROWS), best of FLOOR_REPEATS, per backend.
FLOOR_ROWS = 4096
FLOOR_REPEATS = 3


def gemm_rates(dim: int) -> Dict[str, float]:
    """GFLOP/s of every available backend on a product the size of a kNN block, all cores."""
    from ppise.cluster import gemm_backend
    from ppise.cluster.gemm_knn import all_cores

    with all_cores():
        return gemm_backend.measure(gemm_backend.available(), rows=FLOOR_ROWS, dim=dim, repeats=FLOOR_REPEATS)


def worker(n: int, method: str, out_dir: str, dim: int, id_rank: int = 0, cache: str = "", gemm: str = "auto") -> Dict:
    from ppise.cluster import gemm_backend

    x, ids = make_features(n, dim, id_rank=id_rank)
    t_sel = time.perf_counter()
    with gemm_backend.preferred(gemm):
        chosen = gemm_backend.select()  # once per process (training: once per run), so outside the timings
    extra: Dict = {"gemm": chosen.name, "gemm_select_seconds": time.perf_counter() - t_sel, "kernel": chosen.kernel,
                   "numpy_kernel": gemm_backend.blas_kernel("numpy")}
    rates = gemm_rates(dim)  # before the case and after it: the floor takes the best
    rss_data = _peak_rss_mb()
    use = resource.getrusage(resource.RUSAGE_SELF)
    cpu_data = use.ru_utime + use.ru_stime  # CPU seconds spent making the data, not clustering
    key = os.path.join(cache, _cache_key(n, dim, id_rank)) if cache else ""
    gemm_ctx = gemm_backend.preferred(gemm)
    gemm_ctx.__enter__()
    if method == "dense":
        from sklearn.cluster import DBSCAN

        from dense_jaccard_reference import dense_jaccard
        from ppise.cluster.knn import knn_search

        t0 = time.perf_counter()
        _, rank = knn_search(x, 30)
        t1 = time.perf_counter()
        d = dense_jaccard(x, 30, 6, rank=rank)
        t2 = time.perf_counter()
        labels = DBSCAN(eps=0.6, min_samples=4, metric="precomputed").fit_predict(d)
        t3 = time.perf_counter()
        stats = {"knn_seconds": t1 - t0, "jaccard_seconds": t2 - t1, "dbscan_seconds": t3 - t2, "seconds": t3 - t0}
        from ppise.cluster.diagnostics import cluster_diagnostics

        stats.update(cluster_diagnostics(labels, ids))
        stats["num_clusters"] = int(labels.max() + 1)
    else:
        # the stages of ppise.cluster.pseudo_labels, called one by one to keep the neighbour lists
        from ppise.cluster.diagnostics import cluster_diagnostics
        from ppise.cluster.features import check_features
        from ppise.cluster.jaccard import jaccard_from_knn
        from ppise.cluster.knn import knn_search
        from ppise.cluster.pseudo_label import cluster_centroids, dbscan_sparse

        t0 = time.perf_counter()
        xu = check_features(x)
        info: Dict = {}
        sims, rank = knn_search(xu, 30, method, info=info)
        t1 = time.perf_counter()
        extra.update(info)
        dist = jaccard_from_knn(xu, sims, rank, 30, 6, knn=method)
        t2 = time.perf_counter()
        labels = dbscan_sparse(dist, 0.6, 4)
        t3 = time.perf_counter()
        num = cluster_centroids(xu, labels).shape[0]
        stats = {"knn_seconds": t1 - t0, "jaccard_seconds": t2 - t1, "dbscan_seconds": t3 - t2}
        stats["seconds"] = time.perf_counter() - t0
        stats["num_clusters"] = int(num)
        stats.update(cluster_diagnostics(labels, ids))
        if method == "exact" and key:
            np.save(key + "_labels.npy", labels)
            np.save(key + "_rank.npy", rank)
        elif key and os.path.exists(key + "_rank.npy"):
            extra["recall"] = _recall(rank, np.load(key + "_rank.npy"))
        if method != "exact":
            np.save(os.path.join(out_dir, f"rank_{n}_{method}.npy"), rank)
    gemm_ctx.__exit__(None, None, None)
    np.save(os.path.join(out_dir, f"labels_{n}_{method}.npy"), labels)
    stats.update(extra)
    use = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu_seconds"] = use.ru_utime + use.ru_stime - cpu_data
    after = gemm_rates(dim)
    rates = {k: max(v, after.get(k, 0.0)) for k, v in rates.items()}
    stats["gemm_rates"] = rates
    stats["floor_seconds"] = 2.0 * n * n * dim / (max(rates.values()) * 1e9)
    stats.update({"n": n, "knn": method, "peak_rss_mb": _peak_rss_mb(), "data_rss_mb": rss_data})
    return stats


def run_case(n: int, method: str, out_dir: str, dim: int, id_rank: int = 0, cache: str = "", gemm: str = "auto") -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), method, out_dir, "--dim", str(dim), "--id-rank", str(id_rank),
           "--gemm", gemm]
    if cache:
        cmd += ["--cache", cache]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"n": n, "knn": method, "error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: List[str] = None) -> None:
    from ppise.cluster.knn import KNN_METHODS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[12936])
    ap.add_argument("--knn", nargs="+", default=["exact"], choices=list(KNN_METHODS))
    ap.add_argument("--dense", action="store_true", help="also run the dense baseline for N <= --dense-max")
    ap.add_argument("--dense-max", type=int, default=13000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--id-rank", type=int, default=0, help="identity centres in a space of this rank (0: independent)")
    ap.add_argument("--out", default=None, help="folder for labels (default: a temporary one)")
    ap.add_argument(
        "--cache",
        default="",
        help="folder keeping the exact path's labels and neighbour lists per (N, dim, id-rank): an exact case found "
        "there is not run again, and approximate cases report recall@k1 and ARI against it",
    )
    ap.add_argument("--gemm", default="auto", help="Cluster.gemm: auto (measure) | numpy | paddle | scipy | torch")
    ap.add_argument("--worker", nargs=3, metavar=("N", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        n, method, out = args.worker
        print(json.dumps(worker(int(n), method, out, args.dim, args.id_rank, args.cache, args.gemm)))
        return
    out_dir = args.out or tempfile.mkdtemp(prefix="bench_pl_")
    os.makedirs(out_dir, exist_ok=True)
    if args.cache:
        os.makedirs(args.cache, exist_ok=True)
    head = (
        f"{'N':>7} {'knn':>6} {'knn s':>7} {'jacc s':>7} {'dbscan s':>8} {'total s':>8} {'cpu s':>7} {'non-knn s':>9} {'peak MB':>8} "
        f"{'data MB':>8} {'clusters':>8} {'ARI true':>8} {'recall@k1':>9} {'est.':>6} {'probes':>6} {'ARI vs exact':>12} "
        f"{'floor s':>7} {'knn/fl':>6} {'total/fl':>8} {'GFLOP/s':>7}  gemm (kernel)"
    )
    print(head, flush=True)
    for n in args.n:
        methods = list(args.knn) + (["dense"] if args.dense and n <= args.dense_max else [])
        key = os.path.join(args.cache, _cache_key(n, args.dim, args.id_rank)) if args.cache else ""
        rows = {}
        for method in methods:
            if method == "exact" and key and os.path.exists(key + "_labels.npy"):
                print(f"{n:>7} {method:>6} (cached in {key}_labels.npy: not run again)", flush=True)
                continue
            r = run_case(n, method, out_dir, args.dim, args.id_rank, args.cache, args.gemm)
            rows[method] = r
            if "error" in r:
                print(f"{n:>7} {method:>6} ERROR {r['error']}", flush=True)
                continue
            vs = ""
            ref = key + "_labels.npy" if key else os.path.join(out_dir, f"labels_{n}_exact.npy")
            if method != "exact" and os.path.exists(ref):
                from sklearn.metrics import adjusted_rand_score

                a, b = np.load(ref), np.load(os.path.join(out_dir, f"labels_{n}_{method}.npy"))
                vs = f"{adjusted_rand_score(a, b):.4f}" + (" (identical)" if np.array_equal(a, b) else "")
            rest = r["seconds"] - r["knn_seconds"]
            rec = f"{r['recall']:.4f}" if "recall" in r else "-"
            est = f"{r['knn_recall_estimate']:.3f}" if "knn_recall_estimate" in r else "-"
            probes = f"{r['knn_pivot_probes']:.0f}" if "knn_pivot_probes" in r else "-"
            print(
                f"{n:>7} {method:>6} {r['knn_seconds']:>7.2f} {r['jaccard_seconds']:>7.2f} {r['dbscan_seconds']:>8.2f} "
                f"{r['seconds']:>8.2f} {r['cpu_seconds']:>7.1f} {rest:>9.2f} {r['peak_rss_mb']:>8.0f} {r['data_rss_mb']:>8.0f} "
                f"{r['num_clusters']:>8} {r['ari']:>8.4f} {rec:>9} {est:>6} {probes:>6} {vs:>12} "
                f"{r['floor_seconds']:>7.2f} {r['knn_seconds'] / r['floor_seconds']:>6.2f} {r['seconds'] / r['floor_seconds']:>8.2f} "
                f"{max(r['gemm_rates'].values()):>7.0f}  {r['gemm']} ({r['kernel']})",
                flush=True,
            )
            print(
                f"{'':>7} rates (GFLOP/s, {FLOOR_ROWS}x{args.dim}x{FLOOR_ROWS}, best of before/after): "
                + ", ".join(f"{k} {v:.0f}" for k, v in r["gemm_rates"].items())
                + f"; {r['numpy_kernel']}; backend chosen in {r['gemm_select_seconds']:.2f} s",
                flush=True,
            )
        if "dense" in rows and "exact" in rows and "error" not in rows["dense"] and "error" not in rows["exact"]:
            d, s = rows["dense"], rows["exact"]
            print(
                f"{n:>7}  dense / sparse(exact): non-kNN time x{(d['seconds'] - d['knn_seconds']) / (s['seconds'] - s['knn_seconds']):.1f}, "
                f"peak RSS above data x{(d['peak_rss_mb'] - d['data_rss_mb']) / max(1.0, s['peak_rss_mb'] - s['data_rss_mb']):.1f}",
                flush=True,
            )
    print(f"labels saved in {out_dir}")


if __name__ == "__main__":
    main()
