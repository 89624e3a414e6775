"""Exact top-k inner-product search: BLAS matrix products + faiss's C++ heaps.

``faiss.knn`` ran ~5x slower than numpy's OpenBLAS on the 2-core development machines, so the
products come from the fastest measured library (``gemm_backend``), block by block.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Optional, Tuple

import faiss
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from ppise.cluster.gemm_backend import select
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
    for info in threadpool_info():
        if info.get("user_api") == "openmp" and "paddle" in info.get("filepath", ""):
            return int(info["num_threads"])
    return None


@contextlib.contextmanager
def all_cores() -> Iterator[None]:
    """Let BLAS, Paddle and faiss use every core inside the block (training limits them to one)."""
    cores = _cores()
    before = faiss.omp_get_max_threads()
    paddle_before = paddle_threads()
    switch_paddle = paddle_before is not None and paddle_before != cores
    if switch_paddle:
        from paddle.base import core

        core.set_num_threads(cores)
    faiss.omp_set_num_threads(cores)
    try:
        with threadpool_limits(limits=cores, user_api="blas"):
            yield
    finally:
        faiss.omp_set_num_threads(before)
        if switch_paddle:
            core.set_num_threads(paddle_before)


def topk_inner_product(
    x: np.ndarray, y: np.ndarray, k: int, backend: Optional[str] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """For each row of ``x``, (similarities float32, indices int64) of the ``k`` rows of ``y``
    with the largest inner product, best first; -inf / -1 pad rows when ``y`` is short."""
    same = y is x
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = x if same else np.ascontiguousarray(y, dtype=np.float32)
    gemm = select(backend).gemm
    nq, ny = x.shape[0], y.shape[0]
    sims = np.empty((nq, k), dtype=np.float32)
    ids = np.empty((nq, k), dtype=np.int64)
    heaps = faiss.float_minheap_array_t()  # keeps the best k of each row, in C++
    heaps.k, heaps.nh = k, nq
    heaps.val, heaps.ids = faiss.swig_ptr(sims), faiss.swig_ptr(ids)
    heaps.heapify()
    if same:
        qb = db = min(SELF_BLOCK, max(nq, 1))
        pairs = [(i0, j0) for i0 in range(0, nq, qb) for j0 in range(i0, nq, qb)]
    else:
        qb, db = min(QUERY_BLOCK, max(nq, 1)), min(DATA_BLOCK, max(ny, 1))
        pairs = [(i0, j0) for j0 in range(0, ny, db) for i0 in range(0, nq, qb)]
    buf = np.empty(qb * db, dtype=np.float32)
    tbuf = np.empty(qb * db, dtype=np.float32) if same else None
    for i0, j0 in pairs:
        xb, yb = x[i0:i0 + qb], y[j0:j0 + db]
        block = buf[: xb.shape[0] * yb.shape[0]].reshape(xb.shape[0], yb.shape[0])
        gemm(xb, yb, block)
        heaps.addn(yb.shape[0], faiss.swig_ptr(block), j0, i0, xb.shape[0])
        if same and j0 != i0:  # the same products seen from the rows of block j
            tblock = tbuf[: block.size].reshape(yb.shape[0], xb.shape[0])
            for c0 in range(0, block.shape[0], 512):  # tiles: 2x faster than one strided copy
                tblock[:, c0:c0 + 512] = block[c0:c0 + 512].T
            heaps.addn(xb.shape[0], faiss.swig_ptr(tblock), i0, j0, yb.shape[0])
    heaps.reorder()
    sims[ids < 0] = -np.inf  # faiss pads with -FLT_MAX
    return sims, ids
