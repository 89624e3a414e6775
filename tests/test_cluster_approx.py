"""Approximate kNN options (ivf, pca, hnsw) and the Jaccard stage's memory guard.

The approximate methods must return exact full-dimensional similarities for the
neighbours they list (only recall may differ) and give the exact path's labels on
clustered data; the guard must refuse, with a message naming the config keys, a pair
set larger than its budget, and must not change the exact path's output.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from ppise.cluster import jaccard_distance, knn_search, pseudo_labels
from ppise.cluster.features import check_features
from ppise.cluster.jaccard import MEMORY_ENV, jaccard_from_knn
from ppise.cluster.knn import IVF_CELL, KNN_METHODS
from ppise.errors import ConfigError, TrainingError

APPROX = [m for m in KNN_METHODS if m != "exact"]


def reid_like(num_ids: int, per_id: int, dim: int, seed: int):
    """Identities in look-alike families of 4, camera offsets, low-rank nuisance, noise (unit rows)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(num_ids), per_id)
    fam = rng.standard_normal((num_ids // 4 + 1, dim))[np.arange(num_ids) // 4]
    centres = 0.45 * fam + 0.8 * rng.standard_normal((num_ids, dim))
    cams = rng.standard_normal((6, dim))[rng.integers(0, 6, ids.size)]
    nuis = rng.standard_normal((ids.size, 16)) @ rng.standard_normal((16, dim)) / 4.0
    x = centres[ids] + 0.35 * cams + 0.6 * nuis + 0.5 * rng.standard_normal((ids.size, dim))
    return check_features(x), ids


@pytest.fixture(scope="module")
def data():
    x, ids = reid_like(150, 12, 384, 0)  # N = 1800 > 4 * IVF_CELL: the approximate code really runs
    assert x.shape[0] > 4 * IVF_CELL
    sims, rank = knn_search(x, 30)
    labels = pseudo_labels(x).labels
    return x, ids, sims, rank, labels


def recall(rank: np.ndarray, ref: np.ndarray) -> float:
    n = rank.shape[0]
    base = np.arange(n)[:, None] * n
    return float(np.isin((ref[:, 1:] + base).ravel(), (rank + base).ravel()).mean())


@pytest.mark.parametrize("method", APPROX)
def test_approximate_neighbours_are_exact_and_recall_high(data, method):
    x, _, _, ref, _ = data
    sims, rank = knn_search(x, 30, method)
    assert rank.shape == ref.shape and rank.dtype == np.int64 and sims.dtype == np.float32
    assert (rank[:, 0] == np.arange(x.shape[0])).all()
    assert ((rank >= 0) & (rank < x.shape[0])).all()
    assert all(len(set(r)) == 30 for r in rank[:50].tolist())  # no point listed twice
    full = np.einsum("ij,ij->i", np.repeat(x, 30, axis=0), x[rank.ravel()]).reshape(rank.shape)
    assert np.abs(full[:, 1:] - sims[:, 1:]).max() <= 1e-5  # distances are exact full-dim ones
    assert (np.diff(sims[:, 1:], axis=1) <= 1e-6).all()  # nearest first
    assert recall(rank, ref) >= 0.97


@pytest.mark.parametrize("method", APPROX)
def test_approximate_labels_match_exact(data, method):
    x, ids, _, _, exact = data
    res = pseudo_labels(x, knn=method, true_ids=ids)
    assert adjusted_rand_score(exact, res.labels) >= 0.99
    assert res.stats["num_clusters"] > 100  # the data are really clustered, not one blob


def test_small_sets_fall_back_to_exact():
    x, _ = reid_like(8, 6, 32, 1)  # N = 48 <= 4 * IVF_CELL
    ref = knn_search(x, 20)
    for method in APPROX:
        got = knn_search(x, 20, method)
        assert np.array_equal(got[1], ref[1]) and np.array_equal(got[0], ref[0])


def test_memory_guard_names_keys_and_estimate(data):
    x, _, sims, rank, _ = data
    with pytest.raises(TrainingError, match=r"Cluster\.knn='ivf', Cluster\.k1=30.*estimated [\d,]+ pairs"):
        jaccard_from_knn(x, sims, rank, 30, 6, memory_budget_bytes=1e4, knn="ivf")
    with pytest.raises(TrainingError, match=r"Cluster\.knn='exact'.*budget of 0\.0 GB"):
        jaccard_distance(x, memory_budget_bytes=1e4)


def test_memory_guard_env_and_ample_budget_are_bit_identical(data, monkeypatch):
    x, _, sims, rank, _ = data
    default = jaccard_from_knn(x, sims, rank, 30, 6)
    ample = jaccard_from_knn(x, sims, rank, 30, 6, memory_budget_bytes=1e12)
    assert isinstance(ample, sp.csr_matrix)
    assert np.array_equal(ample.indptr, default.indptr) and np.array_equal(ample.indices, default.indices)
    assert np.array_equal(ample.data, default.data)
    monkeypatch.setenv(MEMORY_ENV, "0.00001")
    with pytest.raises(TrainingError, match=MEMORY_ENV):
        jaccard_from_knn(x, sims, rank, 30, 6)
    monkeypatch.setenv(MEMORY_ENV, "lots")
    with pytest.raises(ConfigError, match=MEMORY_ENV):
        jaccard_from_knn(x, sims, rank, 30, 6)


def test_memory_estimate_is_close(data):
    """The sampled estimate of stored pairs is within 25% of the true count."""
    from ppise.cluster.jaccard import _encode, _PairBlocks

    x, _, sims, rank, _ = data
    blocks = _PairBlocks(_encode(x, sims, rank, 30, 6))
    true = sum(b.nnz for b in (blocks.block(r, min(r + 200, blocks.n)) for r in range(0, blocks.n, 200)) if b is not None)
    assert abs(blocks.estimate_stored() - true) <= 0.25 * true
