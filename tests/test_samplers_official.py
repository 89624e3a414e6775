"""The official RandomMultipleGallerySampler rule and P shrinking inside the P x K samplers."""
import random

import numpy as np
import pytest

from ppise.data import PKSampler, RandomMultipleGallerySampler
from ppise.errors import TrainingError

K = 16


def _index(seed=0, num_ids=60):
    """A fixed Market-like index: 5..30 images per id over 1..6 cameras, one camera dominant."""
    rng = np.random.default_rng(seed)
    labels, cams = [], []
    for pid in range(num_ids):
        n = int(rng.integers(5, 31))
        ncam = int(rng.integers(1, 7))
        share = rng.dirichlet(np.full(ncam, 0.7))
        labels += [pid] * n
        cams += rng.choice(ncam, size=n, p=share).tolist()
    order = rng.permutation(len(labels))
    return np.asarray(labels)[order], np.asarray(cams)[order]


def reference_groups(labels, cams, k, passes, seed):
    """cluster-contrast's RandomMultipleGallerySampler.__iter__, transcribed (one group per identity)."""
    random.seed(seed)
    np.random.seed(seed)
    pid_index = {}
    for i, p in enumerate(labels.tolist()):
        pid_index.setdefault(p, []).append(i)
    pids = sorted(pid_index)
    groups = []
    for _ in range(passes):
        for kid in np.random.permutation(len(pids)).tolist():
            index = pid_index[pids[kid]]
            i = random.choice(index)
            pid_cams = [cams[j] for j in index]
            select_cams = [j for j, c in enumerate(pid_cams) if c != cams[i]]
            group = [i]
            if select_cams:
                picks = np.random.choice(select_cams, size=k - 1, replace=len(select_cams) < k)
            else:
                select = [j for j, x in enumerate(index) if x != i]
                picks = np.random.choice(select, size=k - 1, replace=len(select) < k)
            groups.append(group + [index[j] for j in picks])
    return [np.asarray(g) for g in groups]


def _stats(groups, cams):
    g = np.stack(groups)
    distinct = np.array([np.unique(r).size for r in g], dtype=np.float64)
    same_cam = (cams[g[:, 1:]] == cams[g[:, :1]]).mean(axis=1)
    repeats = K - distinct
    return {"distinct": distinct, "same_cam": same_cam, "repeats": repeats}


def _sampler_groups(sampler):
    return [g for b in sampler for g in np.asarray(b).reshape(-1, sampler.num_instances)]


def test_official_rule_statistics_match_an_independent_reference():
    labels, cams = _index()
    ours = _sampler_groups(RandomMultipleGallerySampler(labels, cams, batch_size=4 * K, num_instances=K,
                                                        iters_per_epoch=300, seed=3))
    ref = reference_groups(labels, cams, K, passes=20, seed=4)
    a, b = _stats(ours, cams), _stats(ref, cams)
    for key in a:
        noise = np.sqrt(a[key].var() / a[key].size + b[key].var() / b[key].size)
        assert abs(a[key].mean() - b[key].mean()) < 4 * noise + 1e-9, (key, a[key].mean(), b[key].mean(), noise)
    # the rule is visible: other cameras only (unless there are none), hence many repeats
    single_cam = np.array([np.unique(cams[labels == labels[g[0]]]).size == 1 for g in ours])
    assert a["same_cam"][~single_cam].max() == 0.0
    assert a["repeats"].mean() > 3
    # per identity too (identities with enough draws)
    for pid in range(0, 60, 7):
        mine = a["distinct"][[labels[g[0]] == pid for g in ours]]
        theirs = b["distinct"][[labels[g[0]] == pid for g in ref]]
        noise = np.sqrt(mine.var() / mine.size + theirs.var() / theirs.size)
        assert abs(mine.mean() - theirs.mean()) < 5 * noise + 0.05, (pid, mine.mean(), theirs.mean())


def test_distinct_rule_is_kept_and_differs():
    labels, cams = _index()
    official = _stats(_sampler_groups(RandomMultipleGallerySampler(labels, cams, 4 * K, K, 100, seed=1)), cams)
    distinct = _stats(_sampler_groups(RandomMultipleGallerySampler(labels, cams, 4 * K, K, 100, rule="distinct",
                                                                   seed=1)), cams)
    assert distinct["distinct"].mean() > official["distinct"].mean() + 2
    assert distinct["same_cam"].mean() > official["same_cam"].mean()
    with pytest.raises(Exception, match="rule"):
        RandomMultipleGallerySampler(labels, cams, 4 * K, K, rule="cc")


@pytest.mark.parametrize("rule", ["official", "distinct"])
@pytest.mark.parametrize("world", [1, 2])
def test_every_batch_is_whole_identities(rule, world):
    labels, cams = _index(seed=1, num_ids=30)
    labels = np.where(np.arange(labels.size) % 9 == 0, -1, labels)  # outliers
    k = 4
    whole = RandomMultipleGallerySampler(labels, cams, 8 * k, k, 40, rule=rule, seed=2)
    shares = [RandomMultipleGallerySampler(labels, cams, 8 * k, k, 40, rule=rule, seed=2, rank=r, world_size=world)
              for r in range(world)]
    for batch, *parts in zip(whole, *shares):
        ids = labels[np.asarray(batch)].reshape(-1, k)
        assert (ids >= 0).all() and (ids == ids[:, :1]).all() and np.unique(ids[:, 0]).size == 8
        assert sum(parts, []) == batch
        for part in parts:
            assert len(part) == 8 * k // world and not set(labels[part]) & set(labels[sum([q for q in parts if q is not part], [])])


@pytest.mark.parametrize("cls,k_key", [(RandomMultipleGallerySampler, "num_instances"), (PKSampler, "sample_per_id")])
def test_p_shrinks_to_the_clusters_present(cls, k_key):
    labels = np.r_[np.repeat(np.arange(7), 5), -np.ones(10, np.int64)]
    cams = np.arange(labels.size) % 3
    kw = {k_key: 4}
    s = cls(labels, cams, batch_size=32, world_size=2, rank=0, **kw)  # P = 8 asked, 7 clusters -> 6 (2 ranks)
    assert s.batch_size == 24 and s.requested_batch_size == 32 and s.num_ids_per_batch == 6
    for b in s:
        ids = labels[np.asarray(b)].reshape(-1, 4)
        assert len(b) == 12 and (ids == ids[:, :1]).all() and np.unique(ids[:, 0]).size == 3
    one = cls(labels, cams, batch_size=16, **kw)
    assert one.batch_size == 16  # enough clusters: nothing changes
    with pytest.raises(TrainingError, match=r"only 1 clusters.*too few to form a batch of pseudo identities on 2 rank"):
        cls(np.r_[np.zeros(5, np.int64), -np.ones(3, np.int64)], None, batch_size=32, world_size=2, **kw)


def test_shrink_warning_names_the_knobs(monkeypatch):
    from ppise.data import samplers

    seen = []
    monkeypatch.setattr(samplers.logger, "warning", lambda msg, *a: seen.append(msg))
    labels = np.repeat(np.arange(5), 4)
    RandomMultipleGallerySampler(labels, None, batch_size=32, num_instances=4)
    assert len(seen) == 1
    msg = seen[0]
    assert "5 clusters < P = 8 identities per batch" in msg and "uses P = 5 (20 images per batch)" in msg
    for knob in ("Cluster.eps", "Cluster.min_samples", "Cluster.k1", "DataLoader.Train.sampler.batch_size"):
        assert knob in msg
