"""Exact top-k inner-product search: numpy (OpenBLAS) matrix products + faiss's C++ heaps.

Why not ``faiss.knn``: on the 2-core development machines the faiss-cpu 1.8.0 wheel's
brute-force search ran at ~38 GFLOP/s while numpy's bundled OpenBLAS multiplied the same
matrices at ~200 GFLOP/s (16,384 x 16,384 x 2048 unit rows: 28.7 s vs 4.8 s). Here the
products come from numpy, block by block, and faiss's heap array keeps the best k of each
row (``addn`` scans a block in C++, so no Python loop runs over rows or columns).
``python benchmarks/bench_pseudo_label.py --knn exact`` prints the end-to-end figures.

OpenBLAS may have been limited to one thread (training sets ``OPENBLAS_NUM_THREADS=1`` for
Paddle, see ``ppise.utils.device``); ``all_cores`` lifts that for the duration of a search.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Tuple

import faiss
import numpy as np

# Rows x columns of one similarity block: 2048 x 16384 float32 = 128 MB, reused.
QUERY_BLOCK = 2048
DATA_BLOCK = 16384


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def all_cores() -> Iterator[None]:
    """Let BLAS and faiss use every core inside the block (restored afterwards)."""
    from threadpoolctl import threadpool_limits

    cores = _cores()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(cores)
    try:
        with threadpool_limits(limits=cores, user_api="blas"):
            yield
    finally:
        faiss.omp_set_num_threads(before)


def topk_inner_product(x: np.ndarray, y: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """For each row of ``x``, the ``k`` rows of ``y`` with the largest inner product.

    Returns (similarities float32, indices int64), both ``len(x) x k``, best first. Rows
    of ``y`` fewer than ``k`` leave -inf / -1 at the end, as faiss does.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.float32)
    nq, ny = x.shape[0], y.shape[0]
    sims = np.empty((nq, k), dtype=np.float32)
    ids = np.empty((nq, k), dtype=np.int64)
    heaps = faiss.float_minheap_array_t()
    heaps.k, heaps.nh = k, nq
    heaps.val, heaps.ids = faiss.swig_ptr(sims), faiss.swig_ptr(ids)
    heaps.heapify()
    qb, db = min(QUERY_BLOCK, max(nq, 1)), min(DATA_BLOCK, max(ny, 1))
    buf = np.empty(qb * db, dtype=np.float32)
    for j0 in range(0, ny, db):
        yb = y[j0:j0 + db]
        for i0 in range(0, nq, qb):
            xb = x[i0:i0 + qb]
            block = buf[: xb.shape[0] * yb.shape[0]].reshape(xb.shape[0], yb.shape[0])
            np.matmul(xb, yb.T, out=block)
            heaps.addn(yb.shape[0], faiss.swig_ptr(block), j0, i0, xb.shape[0])
    heaps.reorder()
    sims[ids < 0] = -np.inf  # faiss pads with -FLT_MAX
    return sims, ids
