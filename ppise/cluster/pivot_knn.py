"""Approximate kNN for large N (``Cluster.knn: ivf``): overlapping pivot cells, exact scores.

Each row joins the cells of its ``PIVOT_PROBES`` most similar pivots (random rows, one per
``PIVOT_CELL``) and pairs inside a cell are scored exactly: about N * probes^2 * cell work.
Re-ID features share strong variation (pose, camera) in which a random pivot looks as close
as one of the same identity, so pivots may be picked with the leading principal directions
removed, if more exact neighbours of ``CHECK_QUERIES`` sampled rows then share a pivot; that
sample also gives ``recall_estimate``. Measured figures: benchmarks/bench_pseudo_label.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import faiss
import numpy as np

from ppise.cluster.gemm_knn import topk_inner_product
from ppise.utils.arrays import l2_normalize

# Measured in benchmarks/bench_pseudo_label.py on 2 CPU cores.
IVF_MIN_RECALL = 0.9  # below this estimated recall, the lists are replaced by the exact search
APPROX_MIN_ROWS = 20000  # below this, ``knn: ivf`` runs the exact search (seconds here, and as fast)
PIVOT_CELL = 32  # rows per pivot
PIVOT_PROBES = (8, 16)  # pivots (cells) each row joins: 8, or 16 when the recall estimate stays low
ENOUGH_HEAD_RECALL = 0.98  # recall of the nearest k/2 (they decide the clusters) that stops adding probes
CHECK_QUERIES = 256  # rows whose exact neighbours measure the candidate space and the recall
SPECTRUM_SAMPLE = 8192  # rows used for the covariance
MAX_DEFLATE = 128  # leading directions considered for removal
MIN_GAP = 1.5  # eigenvalue ratio that counts as a gap between shared variation and the rest
LEAD_LISTS = 1024  # faiss IVF lists for the search in the leading directions
LEAD_PROBES = 32
SEED = 1234
_ROW_STEP = 16384  # rows per block when projecting features


@dataclass
class _Split:
    """Leading principal directions (shared variation) of the features and the residual space."""

    mean: np.ndarray
    axes: np.ndarray

    @property
    def dims(self) -> int:
        return int(self.axes.shape[1])

    def leading(self, x: np.ndarray) -> np.ndarray:
        """Coordinates on the leading directions (N x dims)."""
        out = np.empty((x.shape[0], self.dims), dtype=np.float32)
        for s in range(0, x.shape[0], _ROW_STEP):
            np.matmul(x[s:s + _ROW_STEP] - self.mean, self.axes, out=out[s:s + _ROW_STEP])
        return out

    def residual(self, x: np.ndarray) -> np.ndarray:
        """Unit rows of the centred features with the leading directions removed (N x D)."""
        z = np.empty_like(x)
        for s in range(0, x.shape[0], _ROW_STEP):  # blockwise: no N x D temporaries beyond z
            blk = x[s:s + _ROW_STEP] - self.mean
            blk -= (blk @ self.axes) @ self.axes.T
            z[s:s + _ROW_STEP] = l2_normalize(blk)
        return z


def _spectral_split(x: np.ndarray, rng: np.random.Generator) -> Optional[_Split]:
    """Split off the leading principal directions up to the largest gap of the covariance
    spectrum (ratio >= ``MIN_GAP``, at most ``MAX_DEFLATE`` directions); None without a gap."""
    n, d = x.shape
    sample = x[np.sort(rng.choice(n, min(n, SPECTRUM_SAMPLE), replace=False))].astype(np.float64)
    mean = sample.mean(axis=0)
    sample -= mean
    vals, vecs = np.linalg.eigh(sample.T @ sample / sample.shape[0])  # ascending
    vals, vecs = vals[::-1], vecs[:, ::-1]
    top = np.maximum(vals[: min(MAX_DEFLATE, d - 1) + 1], 1e-12)
    ratios = top[:-1] / top[1:]
    r = int(np.argmax(ratios)) + 1
    if ratios[r - 1] < MIN_GAP:
        return None
    return _Split(mean.astype(np.float32), np.ascontiguousarray(vecs[:, :r], dtype=np.float32))


def _shared_pivot_rate(space: np.ndarray, pivots: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of (query, true neighbour) pairs that share one of their top pivots in ``space``:
    exactly the pairs the cells will compare."""
    piv = space[pivots]
    probes = PIVOT_PROBES[0]
    _, q_top = topk_inner_product(space[queries], piv, probes)
    _, n_top = topk_inner_product(space[truth[:, 1:].ravel()], piv, probes)
    n_top = n_top.reshape(truth.shape[0], truth.shape[1] - 1, probes)
    shared = (n_top[:, :, :, None] == q_top[:, None, None, :]).any(axis=(2, 3))
    return float(shared.mean())


def _hit_rate(got: np.ndarray, truth: np.ndarray) -> float:
    n = max(int(got.max(initial=0)), int(truth.max(initial=0))) + 1
    base = np.arange(got.shape[0], dtype=np.int64)[:, None] * n
    return float(np.isin((truth[:, 1:] + base).ravel(), (got + base).ravel()).mean())


def _cell_candidates(
    x: np.ndarray, top: np.ndarray, num_pivots: int, k: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's best k cell-mates in each of its cells (``top``: N x probes pivot ids), as
    N x probes*k (similarities, ids) with -inf / -1 padding, plus the cell sizes."""
    n, probes = top.shape
    cell = top.ravel()
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(num_pivots + 1))
    members = np.repeat(np.arange(n, dtype=np.int64), probes)[order]
    slots = np.argsort(members, kind="stable").reshape(n, probes)
    sims = np.full((members.size, k), -np.inf, dtype=np.float32)
    ids = np.full((members.size, k), -1, dtype=np.int64)
    for c in range(bounds.size - 1):  # loop over cells (N / PIVOT_CELL), each one matrix product
        a, b = int(bounds[c]), int(bounds[c + 1])
        if a == b:
            continue
        mem = members[a:b]
        s = x[mem] @ x[mem].T
        kk = min(k, mem.size)
        part = np.argpartition(s, mem.size - kk, axis=1)[:, mem.size - kk:]
        sims[a:b, :kk] = np.take_along_axis(s, part, axis=1)
        ids[a:b, :kk] = mem[part]
    return sims[slots].reshape(n, probes * k), ids[slots].reshape(n, probes * k), np.diff(bounds)


def _best_distinct(s: np.ndarray, i: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Best k distinct ids of each row of candidate lists (N x w, -1 / -inf = empty), best first."""
    order = np.argsort(i, axis=1, kind="stable")
    s, i = np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
    s[:, 1:][i[:, 1:] == i[:, :-1]] = -np.inf  # a neighbour met several times counts once
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    s, i = np.take_along_axis(s, part, axis=1), np.take_along_axis(i, part, axis=1)
    best = np.argsort(-s, axis=1, kind="stable")
    s, i = np.take_along_axis(s, best, axis=1), np.take_along_axis(i, best, axis=1)
    i[~np.isfinite(s)] = -1
    return s, i


def _exact_scores(x: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """x_i . x_cand[i, j] for every listed candidate (N x w), in faiss's C++ loop (no gathered copy)."""
    cand = np.ascontiguousarray(cand, dtype=np.int64)
    out = np.empty(cand.shape, dtype=np.float32)
    faiss.fvec_inner_products_by_idx(
        faiss.swig_ptr(out), faiss.swig_ptr(x), faiss.swig_ptr(x), faiss.swig_ptr(cand), x.shape[1], cand.shape[0], cand.shape[1]
    )
    return out


def _leading_candidates(lead: np.ndarray, k: int) -> np.ndarray:
    """k nearest rows by inner product in the few leading dimensions (faiss IVF: cheap at low D)."""
    n, d = lead.shape
    nlist = max(1, min(LEAD_LISTS, n // 64))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = SEED
    index.train(lead[np.random.default_rng(SEED).choice(n, min(n, 64 * nlist), replace=False)])
    index.add(lead)
    index.nprobe = min(nlist, LEAD_PROBES)
    return index.search(lead, k)[1]


def pivot_knn(x: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray, Dict[str, float]]:
    """Approximate (similarities, indices) N x k with exact similarities, plus diagnostics;
    a search in the leading directions adds the rows residual-space pivots would miss."""
    n = x.shape[0]
    rng = np.random.default_rng(SEED)
    queries = np.sort(rng.choice(n, min(n, CHECK_QUERIES), replace=False))
    _, truth = topk_inner_product(x[queries], x, k)
    pivots = np.sort(rng.choice(n, max(PIVOT_PROBES[-1], n // PIVOT_CELL), replace=False))
    split = _spectral_split(x, rng)
    space = x if split is None else split.residual(x)
    if split is not None:
        rates = [_shared_pivot_rate(s, pivots, queries, truth) for s in (space, x)]
        if rates[0] <= rates[1]:
            space, split = x, None
    _, top = topk_inner_product(space, space[pivots], PIVOT_PROBES[-1])
    del space
    extra = None
    if split is not None:
        cand = _leading_candidates(split.leading(x), k)
        cand = np.where(cand < 0, np.arange(n)[:, None], cand)  # empty slots: self, dropped as a duplicate
        extra = (_exact_scores(x, cand), cand)
    for probes in PIVOT_PROBES:  # more probes only while the measured recall is low
        cand_s, cand_i, sizes = _cell_candidates(x, top[:, :probes], pivots.size, k)
        if extra is not None:  # one merge of the row's cells and its leading-direction candidates
            cand_s, cand_i = np.concatenate([cand_s, extra[0]], axis=1), np.concatenate([cand_i, extra[1]], axis=1)
        sims, ids = _best_distinct(cand_s, cand_i, k)
        del cand_s, cand_i
        recall = _hit_rate(ids[queries], truth)
        head = _hit_rate(ids[queries], truth[:, : k // 2 + 1])
        if head >= ENOUGH_HEAD_RECALL:
            break
    info = {
        "deflated_dims": float(0 if split is None else split.dims),
        "pivot_probes": float(probes),
        "recall_estimate": recall,
        "head_recall_estimate": head,
        "pairs_scored_fraction": float((sizes.astype(np.float64) ** 2).sum() / float(n) ** 2),
    }
    return sims, ids, info
