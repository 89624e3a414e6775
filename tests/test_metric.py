"""Tests for ppise.metric: hand-computed cases and independent references.

The market reference below is deliberately naive (a Python loop over queries, Python's
stable ``sorted``). The paddleclas protocol is held to ppise/parity/metrics_reference.py,
the one independent re-implementation of PaddleClas (dense float32, as PaddleClas
computes), which the parity check uses too; its own hand cases are at the end.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from ppise.errors import ConfigError, DataError
from ppise.metric import (Recallk, build_eval_metrics, evaluate, mAP, mINP,
                          topk_from_config)
from ppise.parity.metrics_reference import block_sections, paddleclas_retrieval_metrics
from ppise.registry import METRICS
from ppise.utils.arrays import l2_normalize

# ----------------------------------------------------------------------------- hand cases
# Similarities are given directly: query i = one-hot e_i, gallery j = column j of S, so
# sim = S exactly in float32.
G_IDS = [1, 2, 1, -1, 0, 1, 3, 4, 4]
G_CAMS = [0, 1, 1, 1, 0, 2, 2, 0, 1]
Q_IDS = [1, 2, 3, 4]
Q_CAMS = [0, 1, 0, 0]
S = np.array([
    # q0 id1 cam0: g0 same id+cam; hits g2, g5; junk g3; distractor g4
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, -0.5, -0.5],
    # q1 id2 cam1: its only gallery image g1 shares its camera -> no valid match
    [0.1, 0.9, 0.2, 0.3, 0.4, 0.5, 0.6, -0.5, -0.5],
    # q2 id3 cam0: three-way tie at 0.5 (g1, g4, g6), g6 is the match; junk g3 on top
    [0.1, 0.5, 0.2, 0.9, 0.5, 0.3, 0.5, -0.5, -0.5],
    # q3 id4 cam0: g7 same id+cam (0.95), the match g8 has a negative similarity
    [-0.5] * 7 + [0.95, -0.2],
], dtype=np.float32)


def _hand(protocol, **kw):
    return evaluate(np.eye(4, dtype=np.float32), S.T.copy(), Q_IDS, G_IDS, Q_CAMS, G_CAMS,
                    protocol=protocol, **kw)


def test_market_hand_case():
    # Filtered rankings: q0 [g1, g2*, g4, g5*, g6, g8] -> AP (1/2 + 2/4)/2, first 2, INP 2/4
    # q1 skipped; q2 [g1, g4, g6*, ...] (stable ties) -> AP 1/3, first 3, INP 1/3
    # q3 [g8*, ...] (g7 removed) -> AP 1, first 1, INP 1
    out = _hand("market", topk=(1, 2, 3, 5))
    assert out["num_valid_query"] == 3 and out["num_query"] == 4 and out["num_gallery"] == 9
    assert out["mAP"] == pytest.approx((0.5 + 1 / 3 + 1) / 3, abs=1e-12)
    assert out["rank1"] == pytest.approx(1 / 3)
    assert out["rank2"] == pytest.approx(2 / 3)
    assert out["rank3"] == pytest.approx(1.0) and out["rank5"] == pytest.approx(1.0)
    assert out["mINP"] == pytest.approx((2 / 4 + 1 / 3 + 1) / 3, abs=1e-12)
    assert out["protocol"] == "market"
    assert all(isinstance(out[k], float) for k in ("mAP", "rank1", "mINP"))


def test_market_block_size_does_not_change_results():
    ref = _hand("market")
    for bs in (1, 2, 3, 1000):
        out = _hand("market", block_size=bs)
        for key in ("mAP", "rank1", "rank5", "rank10", "mINP", "num_valid_query"):
            assert out[key] == pytest.approx(ref[key], abs=1e-12)


def test_paddleclas_hand_case():
    # Zeroed, not removed: q0 sorted [g1, g2*, g3, g4, g5*, g6, g0(0), g7, g8]
    #   AP (1/2 + 2/5)/2 = .45, first idx 1, mINP 2/5, upstream 2/4
    # q2: junk g3 is a plain negative: [g3, g1, g4, g6*, ...] AP 1/4, first idx 3, upstream 1/3
    # q3: g7 zeroed to 0 ranks above the match at -0.2: AP 1/2, first idx 1, upstream 1/1
    out = _hand("paddleclas", topk=(1, 2, 4, 5))
    assert out["mAP"] == pytest.approx((0.45 + 0.25 + 0.5) / 3, abs=1e-12)
    assert out["rank1"] == 0.0
    assert out["rank2"] == pytest.approx(2 / 3)
    assert out["rank4"] == pytest.approx(1.0)
    assert out["mINP"] == pytest.approx((0.4 + 0.25 + 0.5) / 3, abs=1e-12)
    assert out["mINP_upstream"] == pytest.approx((0.5 + 1 / 3 + 1) / 3, abs=1e-12)
    assert out["num_valid_query"] == 3


def test_paddleclas_weights_blocks_by_size_not_valid_queries():
    # block [q0, q1] holds one valid query but weighs 2/4; block [q2, q3] weighs 2/4.
    out = _hand("paddleclas", topk=(1, 2), block_size=2)
    assert out["mAP"] == pytest.approx(0.45 * 2 / 4 + (0.25 + 0.5) / 2 * 2 / 4, abs=1e-12)
    assert out["rank2"] == pytest.approx(1.0 * 2 / 4 + 0.5 * 2 / 4, abs=1e-12)
    # a block with no valid query (q1 alone) is NaN in PaddleClas and poisons the sum
    nan_out = _hand("paddleclas", block_size=1)
    assert math.isnan(nan_out["mAP"]) and math.isnan(nan_out["rank1"])


def test_paddleclas_upstream_minp_is_inf_when_last_positive_is_first():
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    g = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    out = evaluate(q, g, [7], [7, 8, 9], [0], [1, 1, 1], protocol="paddleclas")
    assert out["mINP"] == 1.0 and out["mAP"] == 1.0 and out["rank1"] == 1.0
    assert math.isinf(out["mINP_upstream"])


def test_paddleclas_upstream_minp_float32_argmax_collapse():
    # 1 - 1/(j+2) in float32 is equal for j = 9000 and 9001, so PaddleClas's argmax picks
    # the first: hard_index 9000 although the last positive sits at index 9001.
    num_g = 12000
    g = np.linspace(1, -1, num_g, dtype=np.float32)[:, None]
    ids = np.zeros(num_g, dtype=np.int64)
    ids[[9000, 9001]] = 7
    out = evaluate(np.ones((1, 1), np.float32), g, [7], ids, [0], np.ones(num_g, np.int64),
                   protocol="paddleclas")
    assert out["mINP_upstream"] == 2 / 9000
    assert out["mINP"] == 2 / 9002


def test_paddleclas_without_cameras_masks_nothing():
    out = evaluate(np.eye(4, dtype=np.float32), S.T.copy(), Q_IDS, G_IDS,
                   protocol="paddleclas", topk=(1,))
    # q0 hits g0, g2, g5 at idx 0,2,5 -> AP (1 + 2/3 + 3/6)/3; q1 hit g1 at idx 0 -> 1;
    # q2 hit g6 at idx 3 -> 1/4; q3 hits g7, g8 at idx 0,1 -> 1
    assert out["mAP"] == pytest.approx(((1 + 2 / 3 + 0.5) / 3 + 1 + 0.25 + 1) / 4, abs=1e-12)
    assert out["rank1"] == pytest.approx(3 / 4)


# ------------------------------------------------------------------------ random data
def _random_reid(seed, num_q=130, num_g=620, num_ids=40, dim=16, num_cams=6):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_ids + 1, dim))
    q_ids = rng.integers(1, num_ids + 1, size=num_q)
    g_ids = rng.integers(1, num_ids + 1, size=num_g)
    g_ids[rng.random(num_g) < 0.15] = 0      # distractors
    g_ids[rng.random(num_g) < 0.10] = -1     # junk
    q_cams = rng.integers(0, num_cams, size=num_q)
    g_cams = rng.integers(0, num_cams, size=num_g)
    # one identity seen by a single camera: its queries have no valid market match
    q_ids[:3] = num_ids + 1
    q_cams[:3] = 2
    extra = np.arange(4)
    g_ids[extra] = num_ids + 1
    g_cams[extra] = 2

    def feats(ids):
        base = centers[np.clip(ids, 0, num_ids)] * (ids[:, None] > 0)
        return l2_normalize(base + rng.normal(scale=1.3, size=(len(ids), dim)))

    return feats(q_ids), feats(g_ids), q_ids, g_ids, q_cams, g_cams


def _market_reference(qf, gf, q_ids, g_ids, q_cams, g_cams, topk):
    aps, inps, firsts, skipped, checked = [], [], [], 0, 0
    sims = qf @ gf.T  # float32, as evaluate(); float32 ties do occur at this size
    for i in range(len(qf)):
        sim = sims[i]
        order = sorted(range(len(gf)), key=lambda j: (-float(sim[j]), j))
        ranking = [j for j in order if g_ids[j] != -1
                   and not (g_ids[j] == q_ids[i] and g_cams[j] == q_cams[i])]
        hits = [r + 1 for r, j in enumerate(ranking) if g_ids[j] == q_ids[i]]
        if not hits:
            skipped += 1
            continue
        aps.append(sum((n + 1) / h for n, h in enumerate(hits)) / len(hits))
        inps.append(len(hits) / hits[-1])
        firsts.append(hits[0])
        # scikit-learn AP over the filtered ranking equals ours when there are no ties
        y = np.array([g_ids[j] == q_ids[i] for j in ranking])
        score = np.array([sim[j] for j in ranking], dtype=np.float64)
        if len(np.unique(score)) == len(score):
            checked += 1
            assert average_precision_score(y, score) == pytest.approx(aps[-1], abs=1e-9)
    assert checked > len(qf) // 2
    out = {"mAP": np.mean(aps), "mINP": np.mean(inps), "num_valid_query": len(aps)}
    for k in topk:
        out[f"rank{k}"] = np.mean([f <= k for f in firsts])
    return out, skipped


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_market_matches_per_query_reference(seed):
    data = _random_reid(seed)
    topk = (1, 5, 10)
    ref, skipped = _market_reference(*data, topk)
    assert skipped >= 3
    out = evaluate(*data, protocol="market", topk=topk, block_size=64)
    assert out["num_valid_query"] == ref["num_valid_query"] == len(data[0]) - skipped
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
        assert out[key] == pytest.approx(ref[key], abs=1e-6), key
    out17 = evaluate(*data, protocol="market", topk=topk, block_size=17)
    assert out17["mAP"] == pytest.approx(out["mAP"], abs=1e-12)


@pytest.mark.parametrize("seed,block_size", [(0, 64), (1, 64), (2, 17), (3, 130)])
def test_paddleclas_matches_the_reference(seed, block_size):
    data = _random_reid(seed)
    topk = (1, 5, 10)
    ref = paddleclas_retrieval_metrics(*data, topk=topk, block_size=block_size)
    out = evaluate(*data, protocol="paddleclas", topk=topk, block_size=block_size)
    assert out["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
    for k in topk:
        assert out[f"rank{k}"] == pytest.approx(ref[f"recall{k}"], abs=1e-6)
    assert out["mINP"] == pytest.approx(ref["mINP_intended"], abs=1e-6)
    if math.isfinite(ref["mINP"]):
        assert out["mINP_upstream"] == pytest.approx(ref["mINP"], abs=1e-6)
    else:
        assert math.isinf(out["mINP_upstream"])
    # the protocols genuinely differ on this data (zeroing vs removal, junk, weighting)
    market = evaluate(*data, protocol="market", topk=topk, block_size=block_size)
    assert abs(market["mAP"] - out["mAP"]) > 1e-4


def test_paddleclas_matches_the_reference_without_junk_and_with_unmatched_ids():
    rng = np.random.default_rng(3)
    qf = l2_normalize(rng.normal(size=(70, 16)))
    gf = l2_normalize(rng.normal(size=(150, 16)))
    qid, gid = rng.integers(0, 30, 70), rng.integers(0, 25, 150)  # ids >= 25: queries without a match
    qcam, gcam = rng.integers(0, 3, 70), rng.integers(0, 3, 150)
    for block in (64, 16, 7):
        ref = paddleclas_retrieval_metrics(qf, gf, qid, gid, qcam, gcam, topk=(1, 5, 10), block_size=block)
        ours = evaluate(qf, gf, qid, gid, qcam, gcam, protocol="paddleclas", topk=(1, 5, 10), block_size=block)
        for rk, ok in (("mAP", "mAP"), ("recall1", "rank1"), ("recall5", "rank5"), ("recall10", "rank10"),
                       ("mINP_intended", "mINP")):
            assert abs(ref[rk] - ours[ok]) <= 1e-6, (block, rk)
        if math.isfinite(ref["mINP"]):
            assert abs(ref["mINP"] - ours["mINP_upstream"]) <= 1e-6
        else:
            assert not math.isfinite(ours["mINP_upstream"])


# ------------------------------------------------- the reference itself, on hand-computed cases
def _one_hot_feats(sims):
    """Query = e0; gallery rows whose dot product with e0 is ``sims`` (unit norm not needed)."""
    sims = np.asarray(sims, np.float32)
    g = np.zeros((sims.size, sims.size + 1), np.float32)
    g[:, 0] = sims
    g[np.arange(sims.size), np.arange(1, sims.size + 1)] = 1.0
    q = np.zeros((1, sims.size + 1), np.float32)
    q[0, 0] = 1.0
    return q, g


def test_reference_matches_hand_computed_paddleclas_semantics():
    # gallery g2 has the query's id and camera: PaddleClas zeroes it (sim 0, stays ranked, no hit)
    q, g = _one_hot_feats([0.5, 0.8, 0.95, 0.9, -0.2])
    out = paddleclas_retrieval_metrics(q, g, [1], [1, 2, 1, 3, 1], [0], [1, 0, 0, 0, 2], topk=(1, 3))
    # ranking g3, g1, g0, g2(zeroed), g4: hits at ranks 3 and 5
    assert out["mAP"] == pytest.approx((1 / 3 + 2 / 5) / 2, abs=1e-7)
    assert out["recall1"] == 0.0 and out["recall3"] == 1.0
    assert out["mINP"] == pytest.approx(2 / 4, abs=1e-7)  # upstream divides by the 0-based index 4
    assert out["mINP_intended"] == pytest.approx(2 / 5, abs=1e-7)


def test_reference_block_weighting_and_queries_without_match():
    q1, g = _one_hot_feats([0.9, 0.1, 0.5])
    q = np.concatenate([q1, q1, q1])
    # q0 id 1 (hit g1 at rank 3), q1 id 9 (no match anywhere), q2 id 2 (hit g0 at rank 1)
    out = paddleclas_retrieval_metrics(q, g, [1, 9, 2], [2, 1, 3], topk=(1,), block_size=2)
    assert block_sections(3, 2) == [2, 1]
    # block 1 keeps only q0 (AP 1/3) and weighs 2/3; block 2 is q2 (AP 1) weighing 1/3
    assert out["mAP"] == pytest.approx(1 / 3 * 2 / 3 + 1.0 / 3, abs=1e-7)
    assert out["recall1"] == pytest.approx(0.0 * 2 / 3 + 1.0 / 3, abs=1e-7)


def test_reference_agrees_with_the_hand_cases():
    # the hand case of test_paddleclas_hand_case / ..._weights_blocks_by_size, through the reference
    q, g = np.eye(4, dtype=np.float32), S.T.copy()
    out = paddleclas_retrieval_metrics(q, g, Q_IDS, G_IDS, Q_CAMS, G_CAMS, topk=(1, 2, 4), block_size=64)
    assert out["mAP"] == pytest.approx((0.45 + 0.25 + 0.5) / 3, abs=1e-6)
    assert out["recall1"] == 0.0 and out["recall2"] == pytest.approx(2 / 3) and out["recall4"] == pytest.approx(1.0)
    assert out["mINP_intended"] == pytest.approx((0.4 + 0.25 + 0.5) / 3, abs=1e-6)
    assert out["mINP"] == pytest.approx((0.5 + 1 / 3 + 1) / 3, abs=1e-6)
    blocks = paddleclas_retrieval_metrics(q, g, Q_IDS, G_IDS, Q_CAMS, G_CAMS, topk=(1, 2), block_size=2)
    assert blocks["mAP"] == pytest.approx(0.45 * 2 / 4 + (0.25 + 0.5) / 2 * 2 / 4, abs=1e-6)


def test_accepts_paddle_tensors_and_column_labels():
    paddle = pytest.importorskip("paddle")
    qf, gf, q_ids, g_ids, q_cams, g_cams = _random_reid(5, num_q=20, num_g=80)
    ref = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams)
    out = evaluate(paddle.to_tensor(qf), paddle.to_tensor(gf), q_ids.reshape(-1, 1),
                   paddle.to_tensor(g_ids.reshape(-1, 1)), q_cams, g_cams)
    assert out["mAP"] == ref["mAP"] and out["rank1"] == ref["rank1"]


# ------------------------------------------------------------------------------ errors
def test_errors_name_the_problem():
    qf, gf, q_ids, g_ids, q_cams, g_cams = _random_reid(0, num_q=10, num_g=40)
    with pytest.raises(ConfigError, match="Global.eval_protocol"):
        evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, protocol="cmc")
    with pytest.raises(ConfigError, match="Global.sim_block_size"):
        evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, block_size=0)
    with pytest.raises(DataError, match="gallery_ids") as err:
        evaluate(qf, gf, q_ids, g_ids[:-1], q_cams, g_cams)
    assert isinstance(err.value, ValueError)
    with pytest.raises(DataError, match="query_feats has dimension 16 but gallery_feats has 8"):
        evaluate(qf, gf[:, :8], q_ids, g_ids, q_cams, g_cams)
    with pytest.raises(DataError, match="query_cams"):
        evaluate(qf, gf, q_ids, g_ids, q_cams[:3], g_cams)
    with pytest.raises(DataError, match="market protocol needs"):
        evaluate(qf, gf, q_ids, g_ids)
    bad = qf.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="query_feats contains NaN"):
        evaluate(bad, gf, q_ids, g_ids, q_cams, g_cams)
    with pytest.raises(DataError, match="no valid|none of the"):
        evaluate(qf, gf, np.full(10, 999), g_ids, q_cams, g_cams)
    # k beyond the gallery saturates instead of failing (PaddleClas would IndexError)
    big = evaluate(qf, gf, q_ids, g_ids, q_cams, g_cams, protocol="paddleclas", topk=(40, 50))
    assert big["rank50"] == big["rank40"] == pytest.approx(1.0)


# ---------------------------------------------------------------------- config / registry
def test_metric_registry_and_topk_from_config():
    assert METRICS.get("mAP") is mAP and METRICS.get("mINP") is mINP
    assert METRICS.get("Recallk") is Recallk
    cfg = [{"Recallk": {"topk": [1, 5, 20]}}, {"mAP": {}}, {"mINP": None}]
    built = build_eval_metrics(cfg)
    assert [type(m) for m in built] == [Recallk, mAP, mINP]
    assert built[0].topk == (1, 5, 20)
    assert topk_from_config(cfg) == (1, 5, 10, 20)
    assert topk_from_config({"Eval": [{"Recallk": {"topk": 3}}]}) == (1, 3, 5, 10)
    assert topk_from_config(None) == (1, 5, 10)
    assert topk_from_config([{"name": "Recallk", "topk": [2]}]) == (1, 2, 5, 10)
    with pytest.raises(ConfigError, match="Metric.Eval.1"):
        topk_from_config([{"mAP": {}}, {"Top1Acc": {}}])
    with pytest.raises(ConfigError, match="Recallk.topk"):
        topk_from_config([{"Recallk": {"topk": [0, 5]}}])
    with pytest.raises(ConfigError, match="Metric.Eval.0"):
        topk_from_config([{"mAP": {"k": 3}}])
