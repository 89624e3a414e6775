"""ppise.cluster: sparse Jaccard + DBSCAN equal the dense definition; edge cases; diagnostics."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dense_jaccard_reference import dense_jaccard, dense_rank  # noqa: E402

from ppise.cluster import cluster_diagnostics, jaccard_distance, knn_search, pseudo_labels, pseudo_labels_from_config
from ppise.cluster.features import check_features
from ppise.errors import ConfigError, DataError


def clustered(num_ids: int, per_id: int, dim: int, noise: float, seed: int, family: float = 0.0):
    """Unit features of identities (optionally in look-alike pairs) plus their true ids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    if family:
        centres += family * np.repeat(rng.standard_normal((num_ids // 2 + 1, dim)), 2, axis=0)[:num_ids]
    ids = np.repeat(np.arange(num_ids), per_id)
    x = centres[ids] + noise * rng.standard_normal((ids.size, dim))
    return check_features(x), ids


def as_dense(d: sp.csr_matrix) -> np.ndarray:
    out = np.ones(d.shape, dtype=np.float32)
    coo = d.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


def dense_labels(d: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(d)


CASES = [
    # (num_ids, per_id, dim, noise, seed, family, k1, k2, eps)
    (20, 10, 32, 0.3, 0, 0.0, 30, 6, 0.6),  # easy
    (40, 8, 24, 0.9, 1, 1.0, 30, 6, 0.6),  # look-alike pairs, noisy
    (30, 12, 16, 1.1, 2, 1.2, 20, 1, 0.5),  # no query expansion
    (60, 10, 12, 1.0, 3, 0.8, 10, 3, 0.4),  # small k1, tight eps
    (25, 20, 8, 1.4, 4, 0.0, 30, 6, 0.7),  # very noisy, low dim
]


@pytest.mark.parametrize("case", CASES)
def test_sparse_equals_dense_definition(case):
    num_ids, per_id, dim, noise, seed, family, k1, k2, eps = case
    x, ids = clustered(num_ids, per_id, dim, noise, seed, family)
    _, rank = knn_search(x, k1)
    ref_rank = dense_rank(x, k1)
    assert np.array_equal(rank, ref_rank), "faiss and numpy kNN must agree for the comparison to mean anything"
    ref = dense_jaccard(x, k1, k2)
    got = jaccard_distance(x, k1, k2)
    assert isinstance(got, sp.csr_matrix) and got.shape == (x.shape[0],) * 2
    assert np.abs(as_dense(got) - ref).max() <= 1e-5
    assert got.nnz == int((ref < 1).sum())  # every pair < 1 stored, nothing else
    assert (got.data < 1).all() and (got.data >= 0).all()
    res = pseudo_labels(x, k1=k1, k2=k2, eps=eps, min_samples=4, true_ids=ids)
    assert np.array_equal(res.labels, dense_labels(ref, eps, 4))
    assert res.labels.dtype == np.int64


def test_noisy_cases_really_make_errors():
    """The comparison above covers sets where DBSCAN errs, not only perfect ones."""
    errs = []
    for num_ids, per_id, dim, noise, seed, family, k1, k2, eps in CASES[1:]:
        x, ids = clustered(num_ids, per_id, dim, noise, seed, family)
        s = pseudo_labels(x, k1=k1, k2=k2, eps=eps, true_ids=ids).stats
        errs.append(s["mixed_clusters"] + s["sub_identities"] + s["num_outliers"])
    assert sum(e > 0 for e in errs) >= 3


def test_matrix_is_symmetric_with_explicit_zero_diagonal():
    x, _ = clustered(15, 8, 16, 0.4, 5)
    d = jaccard_distance(x)
    assert abs(d - d.T).max() <= 1e-6
    coo = d.tocoo()
    on_diag = coo.row == coo.col
    assert on_diag.sum() == d.shape[0] and (coo.data[on_diag] == 0).all()


def test_fewer_points_than_k1():
    x, ids = clustered(3, 4, 8, 0.2, 6)  # N = 12 < k1 = 30
    ref = dense_jaccard(x, 30, 6)
    got = jaccard_distance(x, 30, 6)
    assert np.abs(as_dense(got) - ref).max() <= 1e-5
    res = pseudo_labels(x, min_samples=2, true_ids=ids)
    assert np.array_equal(res.labels, dense_labels(ref, 0.6, 2))
    single = pseudo_labels(x[:1])
    assert single.labels.tolist() == [-1] and single.centroids.shape == (0, 8)


def test_duplicate_features():
    x, ids = clustered(10, 6, 16, 0.3, 7)
    x = np.concatenate([x, x[:20]])  # 20 exact twins
    _, rank = knn_search(x, 30)
    assert (rank[:, 0] == np.arange(x.shape[0])).all()  # self first even against a twin
    got = jaccard_distance(x)
    ref = dense_jaccard(x, 30, 6, rank=rank)
    assert np.abs(as_dense(got) - ref).max() <= 1e-5
    twins = np.arange(20)
    assert np.allclose(np.asarray(got[twins, twins + 60]).ravel(), 0.0, atol=1e-5)
    res = pseudo_labels(x)
    assert np.array_equal(res.labels[twins], res.labels[twins + 60])
    assert np.array_equal(res.labels, dense_labels(ref, 0.6, 4))


def test_all_one_cluster_and_centroid():
    x, ids = clustered(1, 80, 16, 0.2, 8)
    res = pseudo_labels(x, true_ids=ids)
    assert res.stats["num_clusters"] == 1 and res.stats["num_outliers"] == 0
    mean = x.mean(axis=0)
    assert res.centroids.dtype == np.float32
    assert np.allclose(res.centroids[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert res.stats["ari"] == pytest.approx(1.0) and res.stats["mixed_clusters"] == 0


def test_all_outliers():
    x, ids = clustered(10, 5, 16, 0.3, 9)
    res = pseudo_labels(x, min_samples=x.shape[0] + 1, true_ids=ids)
    assert (res.labels == -1).all() and res.centroids.shape == (0, 16)
    assert res.stats["num_clusters"] == 0 and res.stats["num_outliers"] == 50
    assert res.stats["mixed_clusters"] == 0 and res.stats["sub_identities"] == 0


def test_centroids_in_label_order():
    x, ids = clustered(12, 9, 16, 0.5, 10, 0.5)
    res = pseudo_labels(x)
    assert res.centroids.shape == (res.labels.max() + 1, 16)
    for c in range(res.centroids.shape[0]):
        mean = x[res.labels == c].mean(axis=0)
        assert np.allclose(res.centroids[c], mean / np.linalg.norm(mean), atol=1e-5)
    assert np.allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-5)


def test_unnormalised_features_are_normalised():
    x, ids = clustered(15, 8, 16, 0.6, 11, 0.5)
    scale = np.random.default_rng(0).uniform(0.1, 50.0, size=(x.shape[0], 1))
    a = pseudo_labels(x)
    b = pseudo_labels((x * scale).astype(np.float64))
    assert np.array_equal(a.labels, b.labels)
    assert np.abs(as_dense(jaccard_distance(x * scale)) - as_dense(jaccard_distance(x))).max() <= 1e-5


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_named(bad):
    x, _ = clustered(5, 6, 8, 0.3, 12)
    x[17, 3] = bad
    with pytest.raises(DataError, match="row 17"):
        pseudo_labels(x)
    with pytest.raises(DataError, match="row 17"):
        jaccard_distance(x)


def test_empty_zero_and_misshaped_inputs():
    with pytest.raises(DataError, match="empty"):
        pseudo_labels(np.zeros((0, 16), dtype=np.float32))
    with pytest.raises(DataError, match="2-D"):
        jaccard_distance(np.ones(16, dtype=np.float32))
    x, _ = clustered(5, 6, 8, 0.3, 13)
    x[4] = 0.0
    with pytest.raises(DataError, match="row 4"):
        pseudo_labels(x)


def test_diagnostics_by_hand():
    # clusters: 0 = {a, a, b} (mixed), 1 = {b, b}, 2 = {c, c}, 3 = {c}; outliers: one d, one a
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3, -1, -1])
    truth = np.array(["a", "a", "b", "b", "b", "c", "c", "c", "d", "a"])
    s = cluster_diagnostics(labels, truth)
    assert s["mixed_clusters"] == 1  # cluster 0
    assert s["sub_identities"] == 2  # b over {0, 1}; c over {2, 3}; a only in 0 (its outlier ignored)
    singletons = np.array([0, 0, 0, 1, 1, 2, 2, 3, 4, 5])
    assert s["ari"] == pytest.approx(adjusted_rand_score(truth, singletons))
    perfect = cluster_diagnostics(np.array([0, 0, 1, 1]), np.array([7, 7, 3, 3]))
    assert perfect == {"ari": 1.0, "nmi": 1.0, "mixed_clusters": 0, "sub_identities": 0}
    with pytest.raises(DataError, match="true_ids"):
        cluster_diagnostics(labels, truth[:-1])


def test_stats_fields():
    x, ids = clustered(10, 8, 16, 0.4, 14)
    s = pseudo_labels(x, true_ids=ids).stats
    for key in ("num_clusters", "num_outliers", "seconds", "knn_seconds", "jaccard_seconds", "dbscan_seconds", "ari", "nmi", "mixed_clusters", "sub_identities"):
        assert key in s
    assert s["seconds"] >= s["knn_seconds"] + s["jaccard_seconds"] + s["dbscan_seconds"] - 1e-6
    assert "ari" not in pseudo_labels(x).stats


@pytest.mark.parametrize("method", ["ivf"])
def test_approximate_knn_agrees_on_easy_data(method):
    x, ids = clustered(40, 12, 32, 0.4, 15, 0.5)
    exact = pseudo_labels(x).labels
    approx = pseudo_labels(x, knn=method).labels
    assert adjusted_rand_score(exact, approx) >= 0.99


def test_from_config():
    x, ids = clustered(12, 8, 16, 0.4, 16)
    cfg = {"k1": 20, "k2": 4, "eps": 0.5, "min_samples": 3, "knn": "EXACT", "device": "cpu", "interval": 1}
    a = pseudo_labels_from_config(x, cfg, true_ids=ids)
    b = pseudo_labels(x, k1=20, k2=4, eps=0.5, min_samples=3, true_ids=ids)
    assert np.array_equal(a.labels, b.labels) and a.stats["ari"] == b.stats["ari"]
    for key, value in [("knn", "annoy"), ("device", "tpu"), ("eps", 1.5), ("eps", "0.6"), ("min_samples", 0), ("k1", 2.5), ("k2", 0)]:
        with pytest.raises(ConfigError, match=f"Cluster.{key}"):
            pseudo_labels_from_config(x, {key: value})
    with pytest.raises(ConfigError, match="Cluster"):
        pseudo_labels_from_config(x, ["k1", 30])


def test_gpu_without_faiss_gpu_falls_back(caplog):
    import faiss

    x, _ = clustered(8, 8, 16, 0.3, 17)
    res = pseudo_labels(x, device="gpu")
    assert np.array_equal(res.labels, pseudo_labels(x).labels)
    if faiss.get_num_gpus() == 0:
        import logging

        logging.getLogger("ppise").propagate = True
        try:
            with caplog.at_level(logging.WARNING, logger="ppise"):
                pseudo_labels(x, device="gpu")
        finally:
            logging.getLogger("ppise").propagate = False
        assert "no GPU" in caplog.text
