"""Exact kNN matrix-product backends: same neighbours whichever is chosen, choice by measurement."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ppise.cluster import gemm_backend, gemm_knn
from ppise.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _fresh_choice():
    gemm_backend.reset()
    yield
    gemm_backend.reset()


def _reference_topk(x: np.ndarray, y: np.ndarray, k: int, old_path) -> tuple:
    """The path before backends: numpy blocks of rows x all columns (no symmetric reuse)."""
    return old_path(x, y.copy(), k, backend="numpy")  # a copy: ``y is x`` would take the symmetric path


def _sets(seed: int):
    rng = np.random.default_rng(seed)
    # clustered unit rows (re-ID-like), plain Gaussian rows, and rows with exact duplicates
    centres = rng.standard_normal((40, 96)).astype(np.float32)
    a = centres[rng.integers(0, 40, 900)] + 0.5 * rng.standard_normal((900, 96)).astype(np.float32)
    b = rng.standard_normal((700, 48)).astype(np.float32)
    c = rng.standard_normal((300, 32)).astype(np.float32)
    c = np.concatenate([c, c[:50]])
    canon = [np.arange(len(a)), np.arange(len(b)), np.r_[np.arange(300), np.arange(50)]]  # twins count as one id
    return [(s / np.linalg.norm(s, axis=1, keepdims=True), m) for s, m in zip((a, b, c), canon)]


def _same_up_to_ties(ids_a, sims_a, ids_b, sims_b, x=None, canon=None, tol=1e-5):
    """Neighbour lists equal except where similarities tie (within tol, float32 rounding):
    position by position the similarities agree, each listed similarity is that id's true
    one, and lists differ in few rows."""
    assert np.allclose(sims_a, sims_b, atol=tol)
    if x is not None:
        for ids, sims in ((ids_a, sims_a), (ids_b, sims_b)):
            true = np.einsum("ij,ikj->ik", x.astype(np.float64), x[ids].astype(np.float64))
            assert np.allclose(sims, true, atol=tol)
    if canon is not None:
        ids_a, ids_b = canon[ids_a], canon[ids_b]
    rows = int((ids_a != ids_b).any(axis=1).sum())
    assert rows <= max(2, 0.02 * len(ids_a)), f"{rows} rows differ"
    return rows


@pytest.mark.parametrize("seed", [0, 1])
def test_every_backend_and_the_symmetric_path_list_the_current_neighbours(seed, monkeypatch):
    monkeypatch.setattr(gemm_knn, "SELF_BLOCK", 257)  # several block pairs, ragged last block
    monkeypatch.setattr(gemm_knn, "QUERY_BLOCK", 300)
    monkeypatch.setattr(gemm_knn, "DATA_BLOCK", 500)
    names = sorted(gemm_backend.available())
    assert "numpy" in names
    for x, canon in _sets(seed):
        ref_s, ref_i = _reference_topk(x, x, 30, gemm_knn.topk_inner_product)
        full = x @ x.T
        order = np.argsort(-full, axis=1, kind="stable")[:, :30]
        _same_up_to_ties(ref_i, ref_s, order, np.take_along_axis(full, order, axis=1), x, canon)
        for name in names:
            s, i = gemm_knn.topk_inner_product(x, x, 30, backend=name)  # symmetric path
            _same_up_to_ties(i, s, ref_i, ref_s, x, canon)
            s, i = gemm_knn.topk_inner_product(x, x.copy(), 30, backend=name)  # blocks of rows x columns
            _same_up_to_ties(i, s, ref_i, ref_s, x, canon)


def test_symmetric_path_exact_against_a_sort(monkeypatch):
    monkeypatch.setattr(gemm_knn, "SELF_BLOCK", 7)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    full = (x.astype(np.float64) @ x.T.astype(np.float64))
    sims, ids = gemm_knn.topk_inner_product(x, x, 6, backend="numpy")
    order = np.argsort(-full, axis=1, kind="stable")[:, :6]
    assert np.array_equal(ids, order)
    assert np.allclose(sims, np.take_along_axis(full, order, axis=1), atol=1e-5)
    sims, ids = gemm_knn.topk_inner_product(x, x, 45, backend="numpy")  # k > rows: padded like faiss
    assert (ids[:, 40:] == -1).all() and np.isneginf(sims[:, 40:]).all()


def test_auto_picks_the_fastest_measured_and_rejects_wrong_products(monkeypatch):
    calls = []

    def wrong(a, b, out):
        np.matmul(a, b.T, out=out)
        out *= 1.01

    monkeypatch.setattr(gemm_backend, "available", lambda: {"numpy": gemm_backend._numpy_gemm, "bad": wrong, "other": gemm_backend._numpy_gemm})
    monkeypatch.setattr(gemm_backend, "measure", lambda found, **kw: calls.append(sorted(found)) or {"numpy": 10.0, "other": 20.0})
    chosen = gemm_backend.select("auto")
    assert calls == [["numpy", "other"]]  # the wrong one never got timed
    assert chosen.name == "other" and chosen.gflops == 20.0
    assert gemm_backend.select("auto") is chosen  # measured once per process
    assert len(calls) == 1
    monkeypatch.setattr(gemm_backend, "GEMM_CHOICES", gemm_backend.GEMM_CHOICES + ("bad",))
    with pytest.raises(ConfigError, match="products are wrong"):
        gemm_backend.select("bad")  # forced, but still checked


def test_forced_choice_and_config_validation():
    assert gemm_backend.select("numpy").name == "numpy"
    with gemm_backend.preferred("paddle"):
        assert gemm_backend.select().name == "paddle"
    assert gemm_backend.select().name != "" and gemm_backend._preference == ["auto"]
    with pytest.raises(ConfigError, match="Cluster.gemm"):
        gemm_backend.check_choice("mkl")
    from ppise.cluster.pseudo_label import pseudo_labels_from_config

    x = np.random.default_rng(0).standard_normal((60, 16)).astype(np.float32)
    with pytest.raises(ConfigError, match="Cluster.gemm"):
        pseudo_labels_from_config(x, {"gemm": "blas"})
    a = pseudo_labels_from_config(x, {"gemm": "numpy", "k1": 10, "k2": 3})
    b = pseudo_labels_from_config(x, {"gemm": "paddle", "k1": 10, "k2": 3})
    assert np.array_equal(a.labels, b.labels)


def test_config_default():
    from ppise.config import CLUSTER_DEFAULTS

    assert CLUSTER_DEFAULTS["gemm"] == "auto"


def test_all_cores_raises_and_restores_paddle_threads():
    pytest.importorskip("paddle")
    from paddle.base import core

    core.set_num_threads(1)
    if gemm_knn.paddle_threads() is None:
        pytest.skip("this paddle build's OpenMP pool is not visible to threadpoolctl")
    assert gemm_knn.paddle_threads() == 1
    with gemm_knn.all_cores():
        assert gemm_knn.paddle_threads() == gemm_knn._cores()
    assert gemm_knn.paddle_threads() == 1


_PROBE = r"""
import json, sys
import paddle  # noqa: F401  (as in training: paddle is loaded)
from ppise.cluster import gemm_backend
chosen = gemm_backend.select("auto")
info = gemm_backend._blas("numpy") or {}
print(json.dumps({"chosen": chosen.name, "rates": chosen.measured, "arch": info.get("architecture")}))
"""


def test_generic_prescott_kernel_makes_the_selection_pick_the_fastest_backend():
    """Start a process whose numpy OpenBLAS runs its generic Prescott kernel (the slow case of
    machines OpenBLAS does not recognise): the choice must be the fastest measured backend,
    so numpy is not kept when another backend measured faster."""
    env = dict(os.environ, OPENBLAS_CORETYPE="Prescott", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if got["arch"] != "Prescott":
        pytest.skip(f"numpy's BLAS ignores OPENBLAS_CORETYPE here (architecture {got['arch']})")
    rates = got["rates"]
    assert "numpy" in rates and len(rates) > 1, rates
    assert got["chosen"] == max(rates, key=rates.get)
    faster = [name for name, rate in rates.items() if name != "numpy" and rate > rates["numpy"]]
    if faster:
        assert got["chosen"] != "numpy", rates
