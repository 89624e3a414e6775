"""``update: ori``: the official ``--sample-type ori`` memory rule, exactly."""
import numpy as np
import paddle
import pytest

from ppise.loss.cluster_memory import ClusterMemoryLoss


def unit(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def official_ori(mem, x, y, m):
    """cluster-contrast ``CM.backward``: for x, y in zip(inputs, targets): M[y] = m M[y] + (1-m) x; M[y] /= |M[y]|."""
    mem = mem.copy()
    for xi, yi in zip(unit(x), y):
        mem[yi] = m * mem[yi] + (1 - m) * xi
        mem[yi] /= np.linalg.norm(mem[yi])
    return mem


def _memory(cents, **kw):
    cm = ClusterMemoryLoss(num_features=cents.shape[1], **kw)
    cm.reset(cents)
    return cm


@pytest.mark.parametrize("momentum", [0.1, 0.2, 0.5, 0.0])
def test_ori_equals_the_official_loop(momentum):
    rng = np.random.default_rng(11)
    cents = unit(rng.normal(size=(9, 16)))
    y = np.array([3, 0, 3, 3, 6, 0, 3, 1, 6, 3, 3, 8, 0])  # unequal counts, 2/4/5/7 absent, order interleaved
    x = rng.normal(size=(y.size, 16)) * 3
    cm = _memory(cents, momentum=momentum, update="ori")
    before = cm.memory_state()
    cm.update(paddle.to_tensor(x.astype(np.float32)), paddle.to_tensor(y))
    after = cm.memory_state()
    np.testing.assert_allclose(after, official_ori(before.astype(np.float64), x, y, momentum), atol=1e-6)
    np.testing.assert_array_equal(after[[2, 4, 5, 7]], before[[2, 4, 5, 7]])


def test_ori_over_many_batches_and_mean_is_only_an_approximation():
    rng = np.random.default_rng(12)
    c, d, k = 16, 32, 16
    cents = unit(rng.normal(size=(c, d)))
    ori, mean = _memory(cents, momentum=0.1, update="ori"), _memory(cents, momentum=0.1, update="mean")
    ref = ori.memory_state().astype(np.float64)
    for _ in range(20):
        ids = rng.permutation(c)[:4]
        y = rng.permutation(np.repeat(ids, k))
        x = (ref[y] + 0.8 * rng.normal(size=(y.size, d))).astype(np.float32)
        for cm in (ori, mean):
            cm.update(paddle.to_tensor(x), paddle.to_tensor(y))
        ref = official_ori(ref, x, y, 0.1)
    np.testing.assert_allclose(ori.memory_state(), ref, atol=1e-5)
    cos = (unit(mean.memory_state()) * unit(ori.memory_state())).sum(axis=1)
    assert cos.min() > 0.99 and np.abs(mean.memory_state() - ref).max() > 1e-4
