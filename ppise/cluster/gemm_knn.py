"""Exact top-k inner-product search: BLAS matrix products + faiss's C++ heaps.

Why not ``faiss.knn``: on the 2-core development machines the faiss-cpu 1.8.0 wheel's
brute-force search ran at ~38 GFLOP/s while numpy's bundled OpenBLAS multiplied the same
matrices at ~200 GFLOP/s (16,384 x 16,384 x 2048 unit rows: 28.7 s vs 4.8 s). Here the
products come from the fastest matrix-product library measured in this process
(``gemm_backend.py``: numpy, Paddle, ...; ``Cluster.gemm`` forces one), block by block,
and faiss's heap array keeps the best k of each row (``addn`` scans a block in C++, so no
Python loop runs over rows or columns). A search of the rows against themselves
multiplies each pair of blocks once and feeds the product to both blocks' heaps (the
transpose is a copy, ~10x cheaper than the product): N^2 D flops instead of 2 N^2 D.
``python benchmarks/bench_pseudo_label.py --knn exact`` prints the end-to-end figures.

OpenBLAS and Paddle may have been limited to one thread (training sets
``OPENBLAS_NUM_THREADS=1`` and Paddle's thread count, see ``ppise.utils.device``);
``all_cores`` lifts that for the duration of a search and restores it afterwards.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Optional, Tuple

import faiss
import numpy as np

from ppise.utils.device import cpu_count as _cores

# Rows x columns of one similarity block: 2048 x 16384 float32 = 128 MB, reused.
QUERY_BLOCK = 2048
DATA_BLOCK = 16384
# Side of the square blocks of a self-search (x against x): 4096 x 4096 float32 = 64 MB, twice.
SELF_BLOCK = 4096


def paddle_threads() -> Optional[int]:
    """Paddle's CPU thread count (its Intel OpenMP pool), or None when Paddle is not loaded."""
    if "paddle" not in sys.modules:
        return None
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info.get("user_api") == "openmp" and "paddle" in info.get("filepath", ""):
            return int(info["num_threads"])
    return None


def _set_paddle_threads(threads: int) -> None:
    from paddle.base import core

    core.set_num_threads(threads)


@contextlib.contextmanager
def all_cores() -> Iterator[None]:
    """Let BLAS, Paddle and faiss use every core inside the block (restored afterwards)."""
    from threadpoolctl import threadpool_limits

    cores = _cores()
    before = faiss.omp_get_max_threads()
    paddle_before = paddle_threads()
    faiss.omp_set_num_threads(cores)
    if paddle_before is not None and paddle_before != cores:
        _set_paddle_threads(cores)
    try:
        with threadpool_limits(limits=cores, user_api="blas"):
            yield
    finally:
        faiss.omp_set_num_threads(before)
        if paddle_before is not None and paddle_before != cores:
            _set_paddle_threads(paddle_before)


def _heaps(sims: np.ndarray, ids: np.ndarray) -> "faiss.float_minheap_array_t":
    heaps = faiss.float_minheap_array_t()
    heaps.k, heaps.nh = sims.shape[1], sims.shape[0]
    heaps.val, heaps.ids = faiss.swig_ptr(sims), faiss.swig_ptr(ids)
    heaps.heapify()
    return heaps


def topk_inner_product(x: np.ndarray, y: np.ndarray, k: int, backend: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """For each row of ``x``, the ``k`` rows of ``y`` with the largest inner product.

    Returns (similarities float32, indices int64), both ``len(x) x k``, best first. Rows
    of ``y`` fewer than ``k`` leave -inf / -1 at the end, as faiss does. ``y is x`` takes
    the symmetric path (each block pair multiplied once). ``backend`` names a
    ``gemm_backend`` choice; default: the one in force (``Cluster.gemm``, else measured).
    """
    from ppise.cluster.gemm_backend import select

    same = y is x
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = x if same else np.ascontiguousarray(y, dtype=np.float32)
    gemm = select(backend).gemm
    nq, ny = x.shape[0], y.shape[0]
    sims = np.empty((nq, k), dtype=np.float32)
    ids = np.empty((nq, k), dtype=np.int64)
    heaps = _heaps(sims, ids)
    if same:
        _self_blocks(x, heaps, gemm)
    else:
        qb, db = min(QUERY_BLOCK, max(nq, 1)), min(DATA_BLOCK, max(ny, 1))
        buf = np.empty(qb * db, dtype=np.float32)
        for j0 in range(0, ny, db):
            yb = y[j0:j0 + db]
            for i0 in range(0, nq, qb):
                xb = x[i0:i0 + qb]
                block = buf[: xb.shape[0] * yb.shape[0]].reshape(xb.shape[0], yb.shape[0])
                gemm(xb, yb, block)
                heaps.addn(yb.shape[0], faiss.swig_ptr(block), j0, i0, xb.shape[0])
    heaps.reorder()
    sims[ids < 0] = -np.inf  # faiss pads with -FLT_MAX
    return sims, ids


def _self_blocks(x: np.ndarray, heaps: "faiss.float_minheap_array_t", gemm) -> None:
    """Feed every pair (i, j) of ``x``'s rows to the heaps, multiplying each block pair once."""
    n = x.shape[0]
    b = min(SELF_BLOCK, max(n, 1))
    buf = np.empty(b * b, dtype=np.float32)
    tbuf = np.empty(b * b, dtype=np.float32)
    for i0 in range(0, n, b):
        xi = x[i0:i0 + b]
        for j0 in range(i0, n, b):
            xj = x[j0:j0 + b]
            block = buf[: xi.shape[0] * xj.shape[0]].reshape(xi.shape[0], xj.shape[0])
            gemm(xi, xj, block)
            heaps.addn(xj.shape[0], faiss.swig_ptr(block), j0, i0, xi.shape[0])
            if j0 != i0:  # the same products seen from the rows of block j
                tblock = tbuf[: block.size].reshape(xj.shape[0], xi.shape[0])
                _transpose_into(block, tblock)
                heaps.addn(xi.shape[0], faiss.swig_ptr(tblock), i0, j0, xj.shape[0])


def _transpose_into(block: np.ndarray, out: np.ndarray, tile: int = 512) -> None:
    """out = block.T in column tiles of the source (twice as fast as one strided copy here)."""
    for c0 in range(0, block.shape[0], tile):
        out[:, c0:c0 + tile] = block[c0:c0 + tile].T
