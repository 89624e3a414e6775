"""The approximate kNN option (ivf) and the Jaccard stage's memory guard.

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
from ppise.cluster.knn import KNN_METHODS
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


@pytest.fixture(autouse=True)
def approximate_from_1000_rows(monkeypatch):
    """Approximate options fall back to exact below APPROX_MIN_ROWS (20,000): lower it so
    the approximate code really runs on test-sized data."""
    import ppise.cluster.pivot_knn as pivot

    monkeypatch.setattr(pivot, "APPROX_MIN_ROWS", 1000)


@pytest.fixture(scope="module")
def data():
    x, ids = reid_like(150, 12, 384, 0)  # N = 1800 >= 1000 (see approximate_from_1000_rows)
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
    info = {}
    sims, rank = knn_search(x, 30, method, info=info)
    assert rank.shape == ref.shape and rank.dtype == np.int64 and sims.dtype == np.float32
    assert (rank[:, 0] == np.arange(x.shape[0])).all()
    assert ((rank >= 0) & (rank < x.shape[0])).all()
    assert all(len(set(r)) == 30 for r in rank[:50].tolist())  # no point listed twice
    full = np.einsum("ij,ij->i", np.repeat(x, 30, axis=0), x[rank.ravel()]).reshape(rank.shape)
    assert np.abs(full[:, 1:] - sims[:, 1:]).max() <= 1e-5  # distances are exact full-dim ones
    assert (np.diff(sims[:, 1:], axis=1) <= 1e-6).all()  # nearest first
    got = recall(rank, ref)
    assert got >= 0.95
    if method == "ivf":  # its recall estimate (256 sampled rows) must tell the truth
        assert abs(info["knn_recall_estimate"] - got) <= 0.04


@pytest.mark.parametrize("method", APPROX)
def test_approximate_labels_match_exact(data, method):
    x, ids, _, _, exact = data
    res = pseudo_labels(x, knn=method, true_ids=ids)
    assert adjusted_rand_score(exact, res.labels) >= 0.99
    assert res.stats["num_clusters"] > 100  # the data are really clustered, not one blob


def test_small_sets_fall_back_to_exact():
    x, _ = reid_like(8, 6, 32, 1)  # N = 48 < 1000
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


def test_exact_topk_equals_a_sort_across_blocks(monkeypatch):
    """numpy products + faiss heaps, with blocks small enough that rows and columns span several."""
    import ppise.cluster.gemm_knn as gemm

    monkeypatch.setattr(gemm, "QUERY_BLOCK", 7)
    monkeypatch.setattr(gemm, "DATA_BLOCK", 13)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((50, 16)).astype(np.float32), rng.standard_normal((40, 16)).astype(np.float32)
    full = x @ y.T
    sims, ids = gemm.topk_inner_product(x, y, 5)
    order = np.argsort(-full, axis=1, kind="stable")[:, :5]
    assert np.array_equal(ids, order)
    assert np.allclose(sims, np.take_along_axis(full, order, axis=1), atol=1e-5)
    sims, ids = gemm.topk_inner_product(x, y, 45)  # more than there are rows: padded like faiss
    assert (ids[:, 40:] == -1).all() and np.isneginf(sims[:, 40:]).all()
    assert np.array_equal(np.sort(ids[:, :40], axis=1), np.tile(np.arange(40), (50, 1)))


def test_all_cores_restores_thread_settings():
    import faiss
    from threadpoolctl import threadpool_info

    from ppise.cluster.gemm_knn import all_cores

    faiss.omp_set_num_threads(1)
    blas_before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    with all_cores():
        pass
    assert faiss.omp_get_max_threads() == 1
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == blas_before


def test_spectral_split_finds_planted_shared_directions():
    """A rank-5 shared variation far above the rest of the spectrum is split off exactly."""
    from ppise.cluster.pivot_knn import _spectral_split

    rng = np.random.default_rng(4)
    shared = np.linalg.qr(rng.standard_normal((64, 5)))[0].T  # 5 orthonormal directions
    x = check_features(3.0 * rng.standard_normal((3000, 5)) @ shared + 0.3 * rng.standard_normal((3000, 64)))
    split = _spectral_split(x, np.random.default_rng(0))
    assert split is not None and split.dims == 5
    # the split's axes span the planted directions
    assert np.allclose(np.linalg.svd(shared @ split.axes, compute_uv=False), 1.0, atol=0.02)
    z = split.residual(x)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert np.abs(z @ split.axes).max() < 1e-4  # nothing of the leading directions left
    assert np.allclose(split.leading(x), (x - split.mean) @ split.axes, atol=1e-5)
    assert _spectral_split(check_features(rng.standard_normal((3000, 64))), np.random.default_rng(0)) is None


def test_ivf_residual_branch_lists_exact_distinct_neighbours(data, monkeypatch):
    """Force the residual-space pivots (+ leading-direction candidates) and check the lists."""
    import ppise.cluster.pivot_knn as pk

    x, _, _, ref, _ = data
    rates = iter([1.0, 0.0])  # residual space rated better than the features themselves
    monkeypatch.setattr(pk, "_shared_pivot_rate", lambda *a: next(rates))
    monkeypatch.setattr(pk, "MIN_GAP", 1.0)  # always split off the leading directions
    sims, ids, info = pk.pivot_knn(x, 30)
    assert info["deflated_dims"] > 0
    assert ((ids >= 0) & (ids < x.shape[0])).all()
    assert all(len(set(r)) == 30 for r in ids.tolist())
    full = np.einsum("ijd,id->ij", x[ids], x)
    assert np.abs(full - sims).max() <= 1e-5
    assert recall(ids, ref) >= 0.9 and abs(info["recall_estimate"] - recall(ids, ref)) <= 0.05


def test_ivf_reports_diagnostics_in_stats(data):
    x, ids, _, _, _ = data
    stats = pseudo_labels(x, knn="ivf", true_ids=ids).stats
    assert 0.9 <= stats["knn_recall_estimate"] <= 1.0
    assert stats["knn_pivot_probes"] in (8.0, 16.0)
    assert "knn_recall_estimate" not in pseudo_labels(x).stats


def test_ivf_falls_back_to_exact_when_its_recall_is_low(data, monkeypatch, caplog):
    """Below IVF_MIN_RECALL the exact lists replace the approximate ones, with a warning."""
    import logging

    import ppise.cluster.pivot_knn as pivot

    x, _, ref_sims, ref, _ = data
    monkeypatch.setattr(pivot, "IVF_MIN_RECALL", 1.01)  # no estimate can reach it
    logging.getLogger("ppise").propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="ppise"):
            info = {}
            sims, rank = knn_search(x, 30, "ivf", info=info)
    finally:
        logging.getLogger("ppise").propagate = False
    assert np.array_equal(rank, ref) and np.array_equal(sims, ref_sims)
    assert info["knn_fallback_exact"] == 1.0 and info["knn_recall_estimate"] == 1.0
    assert 0.9 <= info["knn_approx_recall_estimate"] < 1.01
    assert "searching exactly instead" in caplog.text and "Cluster.knn" in caplog.text


def test_removed_hnsw_option_names_the_key_and_the_choices():
    x, _ = reid_like(8, 6, 32, 1)
    assert KNN_METHODS == ("exact", "ivf")
    for call in (lambda: knn_search(x, 10, "hnsw"), lambda: pseudo_labels(x, knn="hnsw")):
        with pytest.raises(ConfigError, match=r"Cluster.knn: unknown value 'hnsw' \(removed.*expected one of exact, ivf"):
            call()
