"""ISE core: ISESupport (PLI supports), LabelPreservingLoss, ClusterMemoryLoss, build_losses.

Each batched implementation is checked against the docs/design.md formula written the slow,
obvious way (per-sample Python loops here in the test).
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

from ppise.errors import ConfigError, TrainingError
from ppise.loss import CELoss, ClusterMemoryLoss, ISESupport, LabelPreservingLoss, SupConLoss, build_losses, pli_alpha
from ppise.registry import LOSSES


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def t64(a, grad: bool = False) -> paddle.Tensor:
    return paddle.to_tensor(np.asarray(a, dtype=np.float64), stop_gradient=not grad)


def lab(a) -> paddle.Tensor:
    return paddle.to_tensor(np.asarray(a, dtype=np.int64))


# ----------------------------------------------------------------------------- ISESupport
# Hand-made centroids in 3-d: e1, e2, e3 and the diagonal (e1 + e2) / sqrt(2).
CENTROIDS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / math.sqrt(2), 1 / math.sqrt(2), 0]])


def test_support_is_registered_in_the_loss_list_and_parameter_free():
    head = LOSSES.get("ISESupport")(topk=1)
    assert len(head.parameters()) == 0
    assert head.base_lambda == 1.0


def test_alpha_schedule_endpoints_and_progress_forms():
    assert pli_alpha((0, 100), 1.0) == 0.0
    assert pli_alpha((100, 100), 2.0) == pytest.approx(0.5)
    mid = pli_alpha(0.5, 1.0)
    assert mid == pytest.approx(0.25 * math.log(1 + (math.e - 1) * 0.5))
    assert pli_alpha((50, 100), 1.0) == pytest.approx(mid)
    for bad in [(5, 0), (11, 10), -0.1, 1.5]:
        with pytest.raises(ValueError):
            pli_alpha(bad, 1.0)


def test_supports_at_t0_equal_normalised_features():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 3)) * 7.0  # not normalised on purpose
    head = ISESupport(topk=2, base_lambda=3.0)
    s, ys, alpha = head(t64(f), lab([0, 1, 2, 3, 0]), t64(CENTROIDS), (0, 400))
    assert alpha == 0.0
    np.testing.assert_allclose(s.numpy(), np.repeat(unit(f), 2, axis=0), atol=1e-12)
    np.testing.assert_array_equal(ys.numpy(), [0, 0, 1, 1, 2, 2, 3, 3, 0, 0])


def test_own_centroid_excluded_even_when_most_similar():
    # Sample 0 sits on e1 with label 0: its own centroid is the most similar, the diagonal
    # (cluster 3) is next. Sample 1 sits on e1 but is labelled 3: nearest other is cluster 0.
    f = np.array([[1.0, 0.05, 0.0], [1.0, 0.0, 0.02]])
    labels = [0, 3]
    base_lambda = 2.0
    head = ISESupport(topk=1, base_lambda=base_lambda)
    s, ys, alpha = head(t64(f), lab(labels), t64(CENTROIDS), (400, 400))
    assert alpha == pytest.approx(base_lambda / 4)
    expected = np.stack([
        unit(unit(f[0]) + alpha * (CENTROIDS[3] - CENTROIDS[0])),
        unit(unit(f[1]) + alpha * (CENTROIDS[0] - CENTROIDS[3])),
    ])
    np.testing.assert_allclose(s.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(s.numpy(), axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(ys.numpy(), labels)


def test_topk2_is_sample_major_and_ordered_by_similarity():
    # Sample 0 (label 0): similarity order excluding itself is 3 (0.8 + ...), then 1, then 2.
    f = np.array([[0.8, 0.5, 0.1], [0.1, 0.2, 0.9]])
    labels = [0, 2]
    head = ISESupport(topk=2, base_lambda=1.0)
    s, ys, alpha = head(t64(f), lab(labels), t64(CENTROIDS), 0.7)
    fn = unit(f)
    expected = []
    for i, y in enumerate(labels):
        sims = CENTROIDS @ fn[i]
        sims[y] = -np.inf
        for n in np.argsort(-sims)[:2]:
            expected.append(unit(fn[i] + alpha * (CENTROIDS[n] - CENTROIDS[y])))
    assert np.argsort(-(CENTROIDS @ fn[0]))[:3].tolist() == [3, 0, 1]  # own one is 2nd best
    np.testing.assert_allclose(s.numpy(), np.stack(expected), atol=1e-12)
    np.testing.assert_array_equal(ys.numpy(), [0, 0, 2, 2])


def test_gradient_flows_to_features_and_matches_finite_differences():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(4, 3))
    w = rng.normal(size=(8, 3))
    labels = lab([0, 1, 2, 3])
    head = ISESupport(topk=2, base_lambda=4.0)

    def value(arr):
        s, _, _ = head(t64(arr), labels, t64(CENTROIDS), (3, 4))
        return float((s * t64(w)).sum())

    x = t64(f, grad=True)
    s, _, _ = head(x, labels, t64(CENTROIDS), (3, 4))
    (s * t64(w)).sum().backward()
    grad = x.grad.numpy()
    assert np.abs(grad).max() > 1e-3
    h = 1e-6
    numeric = np.zeros_like(f)
    for idx in np.ndindex(*f.shape):  # neighbours are locally constant, so FD is exact
        d = np.zeros_like(f)
        d[idx] = h
        numeric[idx] = (value(f + d) - value(f - d)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=1e-6)


def test_head_rejects_bad_config_and_bad_batches():
    with pytest.raises(ConfigError):
        ISESupport(topk=0)
    with pytest.raises(ConfigError):
        ISESupport(base_lambda=-1.0)
    head = ISESupport(topk=4)
    with pytest.raises(TrainingError, match="topk"):
        head(t64(np.ones((2, 3))), lab([0, 1]), t64(CENTROIDS), 0.5)
    with pytest.raises(TrainingError, match="outliers"):
        ISESupport()(t64(np.ones((2, 3))), lab([-1, 1]), t64(CENTROIDS), 0.5)


# ----------------------------------------------------------------------------- LP loss
def naive_lp(f, s, y, ys, tau):
    """docs/design.md LP loss, one sample and one identity at a time (float64, autograd)."""
    f = paddle.nn.functional.normalize(f, axis=1)
    y, ys = y.tolist(), ys.tolist()
    total = 0.0
    for i in range(len(y)):
        e = paddle.exp((s * f[i]).sum(axis=1) / tau)
        pos = paddle.min(paddle.stack([e[j] for j in range(len(ys)) if ys[j] == y[i]]))
        neg = 0.0
        for g in sorted(set(ys) - {y[i]}):
            neg = neg + paddle.max(paddle.stack([e[j] for j in range(len(ys)) if ys[j] == g]))
        total = total - paddle.log(pos / (pos + neg + 1e-6) + 1e-6)
    return total / len(y)


def lp_case(labels, k, dim, seed):
    rng = np.random.default_rng(seed)
    b = len(labels)
    f = rng.normal(size=(b, dim)) * 3.0
    s = unit(rng.normal(size=(b * k, dim)))
    return f, s, np.asarray(labels), np.repeat(labels, k)


@pytest.mark.parametrize(
    "labels,k,tau",
    [
        ([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3], 1, 0.6),  # P x K, contiguous (official layout)
        ([5, 2, 5, 9, 2, 9, 5, 2, 9, 2, 5, 9], 2, 0.6),  # P x K shuffled, topk 2
        ([4, 4, 4, 4, 4, 1, 7, 7, 3, 3, 3], 1, 0.6),  # unequal label counts, a singleton
        ([0, 1, 0, 1, 2], 3, 0.05),  # small tau: exercises the overflow-safe shift
    ],
)
def test_lp_loss_matches_naive_loop_values_and_gradients(labels, k, tau):
    f_np, s_np, y_np, ys_np = lp_case(labels, k, dim=16, seed=len(labels) + k)
    loss_fn = LabelPreservingLoss(temperature=tau)
    f1, s1 = t64(f_np, grad=True), t64(s_np, grad=True)
    fast = loss_fn(f1, s1, lab(y_np), lab(ys_np))
    fast.backward()
    f2, s2 = t64(f_np, grad=True), t64(s_np, grad=True)
    slow = naive_lp(f2, s2, y_np, ys_np, tau)
    slow.backward()
    assert float(fast) == pytest.approx(float(slow), rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(f1.grad.numpy(), f2.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(s1.grad.numpy(), s2.grad.numpy(), atol=1e-5)


def test_lp_loss_float32_with_ise_head_supports():
    rng = np.random.default_rng(3)
    centroids = unit(rng.normal(size=(6, 32))).astype(np.float32)
    labels = lab(np.repeat([0, 2, 5], 4))
    x = paddle.to_tensor(rng.normal(size=(12, 32)).astype(np.float32), stop_gradient=False)
    s, ys, _ = ISESupport(topk=2)(x, labels, paddle.to_tensor(centroids), (200, 400))
    loss = LabelPreservingLoss()(x, s, labels, ys)
    slow = naive_lp(t64(x.numpy()), t64(s.numpy()), labels.numpy(), ys.numpy(), 0.6)
    assert float(loss) == pytest.approx(float(slow), rel=1e-5)
    loss.backward()
    assert np.isfinite(x.grad.numpy()).all() and np.abs(x.grad.numpy()).sum() > 0


def test_lp_loss_requires_a_positive_support():
    with pytest.raises(ValueError, match="no support"):
        LabelPreservingLoss()(t64(np.eye(2)), t64(np.eye(2)), lab([0, 1]), lab([0, 0]))


# ----------------------------------------------------------------------------- memory
def memory_with(centroids, **kw):
    cm = ClusterMemoryLoss(num_features=centroids.shape[1], **kw)
    cm.reset(centroids)
    return cm


def test_memory_forward_equals_manual_cross_entropy():
    rng = np.random.default_rng(4)
    cents = rng.normal(size=(7, 10))
    x = rng.normal(size=(9, 10)) * 5
    y = rng.integers(0, 7, size=9)
    cm = memory_with(cents, temperature=0.05)
    loss = float(cm(paddle.to_tensor(x.astype(np.float32)), lab(y)))
    logits = unit(x) @ unit(cents).T / 0.05
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    manual = float(np.mean(lse - logits[np.arange(9), y]))
    assert loss == pytest.approx(manual, rel=1e-5)


def sequential_mean(mem, x, y, m):
    """DESIGN: M[y] <- m M[y] + (1 - m) x for each x in turn; renormalise each touched row once."""
    mem = mem.copy()
    x = unit(x)
    for xi, yi in zip(x, y):
        mem[yi] = m * mem[yi] + (1 - m) * xi
    for yi in set(y.tolist()):
        mem[yi] = unit(mem[yi])
    return mem


def sequential_hard(mem, x, y, m):
    mem = mem.copy()
    x = unit(x)
    for yi in sorted(set(y.tolist())):
        idx = np.flatnonzero(y == yi)
        hardest = idx[np.argmin(x[idx] @ mem[yi])]
        mem[yi] = unit(m * mem[yi] + (1 - m) * x[hardest])
    return mem


@pytest.mark.parametrize("mode,ref", [("mean", sequential_mean), ("hard", sequential_hard)])
@pytest.mark.parametrize("momentum", [0.2, 0.5, 0.0])
def test_memory_update_matches_sequential_loop(mode, ref, momentum):
    rng = np.random.default_rng(5)
    cents = unit(rng.normal(size=(8, 12)))
    y = np.array([3, 0, 3, 3, 6, 0, 3, 1, 6, 3, 3])  # unequal counts, clusters 2,4,5,7 absent
    x = rng.normal(size=(y.size, 12)) * 4
    cm = memory_with(cents, momentum=momentum, update=mode)
    before = cm.memory_state()
    cm.update(paddle.to_tensor(x.astype(np.float32)), lab(y))
    after = cm.memory_state()
    np.testing.assert_allclose(after, ref(before.astype(np.float64), x, y, momentum), atol=1e-5)
    untouched = [2, 4, 5, 7]
    np.testing.assert_array_equal(after[untouched], before[untouched])
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)


def test_reset_new_cluster_count_and_state_round_trip():
    rng = np.random.default_rng(6)
    cm = memory_with(rng.normal(size=(5, 8)))
    assert cm.num_clusters == 5
    cm.reset(paddle.to_tensor(rng.normal(size=(11, 8)).astype(np.float32)))
    assert cm.num_clusters == 11
    np.testing.assert_allclose(np.linalg.norm(cm.memory_state(), axis=1), 1.0, atol=1e-6)
    loss = cm(paddle.to_tensor(rng.normal(size=(4, 8)).astype(np.float32)), lab([10, 0, 3, 10]))
    assert np.isfinite(float(loss))
    with pytest.raises(TrainingError, match=r"\[0, 11\)"):
        cm(paddle.to_tensor(np.ones((1, 8), np.float32)), lab([11]))
    with pytest.raises(ConfigError, match="num_features"):
        cm.reset(np.ones((3, 9)))
    state = cm.memory_state()
    other = ClusterMemoryLoss(num_features=8)
    with pytest.raises(TrainingError, match="reset"):
        other(paddle.to_tensor(np.ones((1, 8), np.float32)), lab([0]))
    other.set_memory_state(state)
    np.testing.assert_array_equal(other.memory_state(), state)


# ----------------------------------------------------------------------------- builder
def test_build_losses_from_paddleclas_style_list():
    losses = build_losses(
        [
            {"ClusterMemoryLoss": {"weight": 1.0, "temperature": 0.05, "num_features": 16}},
            {"LabelPreservingLoss": {"weight": 0.1}},
            {"CELoss": None},
        ]
    )
    assert list(losses) == ["ClusterMemoryLoss", "LabelPreservingLoss", "CELoss"]
    assert losses["LabelPreservingLoss"].weight == 0.1
    assert losses["ClusterMemoryLoss"].temperature == 0.05
    assert "ClusterMemoryLoss" in LOSSES


@pytest.mark.parametrize(
    "cfg,pattern",
    [
        ([{"TripletFoo": {}}], r"Loss.Train\[0\].*unknown loss 'TripletFoo'.*ClusterMemoryLoss"),
        ([{"LabelPreservingLoss": {"tau": 1}}], r"Loss.Train\[0\].LabelPreservingLoss.*tau"),
        ([{"CELoss": {}}, {"ClusterMemoryLoss": {"update": "median"}}], r"Loss.Train\[1\].*update"),
        ([{"CELoss": {}, "SupConLoss": {}}], r"Loss.Train\[0\].*single-key"),
        ({"CELoss": {}}, r"Loss.Train must be a list"),
    ],
)
def test_build_losses_errors_name_the_config_path(cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_losses(cfg)


def test_celoss_and_supcon_match_direct_formulas():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(6, 5))
    y = rng.integers(0, 5, size=6)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ce = float(CELoss()({"logits": t64(logits)}, lab(y)))
    assert ce == pytest.approx(-logp[np.arange(6), y].mean(), rel=1e-9)
    smooth = np.full((6, 5), 0.1 / 5) + 0.9 * np.eye(5)[y]
    assert float(CELoss(epsilon=0.1)(t64(logits), lab(y))) == pytest.approx(-(smooth * logp).sum(1).mean())

    views, ids = 2, np.array([4, 4, 9, 9, 4, 4])  # 3 identity slots x 2 views, slots 0 and 2 share id 4
    feats = unit(rng.normal(size=(6, 8)))
    got = float(SupConLoss(views=views, temperature=0.1, base_temperature=0.1)(t64(feats), lab(ids)))
    # Direct: every row is an anchor; positives are other rows of the same identity.
    total = 0.0
    for a in range(6):
        others = [j for j in range(6) if j != a]
        denom = np.log(sum(np.exp(feats[a] @ feats[j] / 0.1) for j in others))
        pos = [j for j in others if ids[j] == ids[a]]
        total += -np.mean([feats[a] @ feats[j] / 0.1 - denom for j in pos])
    assert got == pytest.approx(total / 6, rel=1e-9)
