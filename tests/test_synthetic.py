"""Synthetic Market-1501: layout, naming, determinism, decodability, difficulty, errors."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections import defaultdict
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pytest
from PIL import Image

from synthreid.synthetic import (MARKET_DIR, SPLITS, _make_identities, dataset_present, dataset_root,
                                 make_source_set, make_synthetic_reid)
from ppise.errors import ConfigError, DataError

PADDLECLAS_RULE = re.compile(r"([-\d]+)_c(\d)")  # PaddleClas Market1501: searched in the path
MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-6])s([1-6])_(\d{6})_(\d{2})\.jpg$")
NUM_IDS = 30

Record = Tuple[str, int, int]  # path, pid, camera


def _records(root: str, split: str) -> List[Record]:
    folder = os.path.join(root, split)
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        pid, cam = map(int, PADDLECLAS_RULE.search(path).groups())
        out.append((path, pid, cam))
    return out


def _hashes(root: str) -> Dict[str, str]:
    out = {}
    for split in SPLITS:
        for name in os.listdir(os.path.join(root, split)):
            with open(os.path.join(root, split, name), "rb") as f:
                out[f"{split}/{name}"] = hashlib.sha1(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, dict]:
    """Seed 0 twice (determinism) and seed 1 once; default options otherwise."""
    base = tmp_path_factory.mktemp("synthetic")
    return {key: make_synthetic_reid(str(base / key), num_ids=NUM_IDS, seed=seed)
            for key, seed in (("a", 0), ("b", 0), ("c", 1))}


def test_layout_and_naming(sets: Dict[str, dict]) -> None:
    s = sets["a"]
    root = s["root"]
    assert root == dataset_root(s["image_root"]) and root.endswith(MARKET_DIR)
    assert sorted(os.listdir(root)) == sorted(SPLITS)
    assert os.listdir(os.path.dirname(root)) == [os.path.basename(root)]  # no temporary folder left
    for split in SPLITS:
        names = os.listdir(os.path.join(root, split))
        assert names and all(MARKET_NAME.match(n) for n in names), split
    train, query, gallery = (_records(root, sp) for sp in ("bounding_box_train", "query", "bounding_box_test"))
    assert (len(train), len(query), len(gallery)) == (
        s["num_train_images"], s["num_query_images"], s["num_gallery_images"])

    train_ids = {p for _, p, _ in train}
    test_ids = {p for _, p, _ in query}
    assert len(train_ids) == s["num_train_ids"] == NUM_IDS // 2
    assert len(test_ids) == s["num_test_ids"] == NUM_IDS - NUM_IDS // 2
    assert not train_ids & test_ids and not train_ids & {0, -1} and not test_ids & {0, -1}
    assert {p for _, p, _ in gallery} == test_ids | {0, -1}

    # Distractors (0000) and junk (-1) are in the gallery, counted in the summary.
    assert sum(p == 0 for _, p, _ in gallery) == s["num_distractors"] > 0
    assert sum(p == -1 for _, p, _ in gallery) == s["num_junk"] > 0

    # Train: every identity can fill a K=4 batch and a DBSCAN min_samples=4 cluster across cameras.
    per_train: Dict[int, List[int]] = defaultdict(list)
    for _, p, c in train:
        per_train[p].append(c)
    assert all(len(c) >= 4 and len(set(c)) >= 2 for c in per_train.values())

    # Query: exactly one image per test identity per camera it appears in.
    q_pairs = [(p, c) for _, p, c in query]
    assert len(q_pairs) == len(set(q_pairs))
    seen = {(p, c) for _, p, c in query + gallery if p > 0}
    assert set(q_pairs) == seen
    g_cams: Dict[int, set] = defaultdict(set)
    for _, p, c in gallery:
        g_cams[p].add(c)
    for p, c in q_pairs:  # every query has a cross-camera match in the gallery
        assert g_cams[p] - {c}, (p, c)


def test_images_decode_as_market_boxes(sets: Dict[str, dict]) -> None:
    root = sets["a"]["root"]
    for split in SPLITS:
        for path, _, _ in _records(root, split):
            with Image.open(path) as im:
                assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 128), path


def test_deterministic_by_seed(sets: Dict[str, dict]) -> None:
    a, b, c = (_hashes(sets[k]["root"]) for k in "abc")
    assert a == b
    assert len(a) > 100
    shared = set(a) & set(c)
    assert set(a) != set(c) or any(a[k] != c[k] for k in shared)
    assert sum(a[k] == c[k] for k in shared) < 0.01 * len(a)  # a new seed redraws everything


def _hist_features(paths: List[str]) -> np.ndarray:
    """HSV histograms of the upper and lower body: a crude appearance descriptor."""
    feats = []
    for p in paths:
        hsv = cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2HSV)
        parts = (hsv[16:64, 12:52], hsv[64:120, 12:52])
        h = np.concatenate([cv2.calcHist([x], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
                            for x in parts])
        feats.append(np.sqrt(h / h.sum()))
    f = np.asarray(feats, np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def test_learnable_but_not_trivial(sets: Dict[str, dict]) -> None:
    train = _records(sets["a"]["root"], "bounding_box_train")
    f = _hist_features([p for p, _, _ in train])
    pids = np.array([p for _, p, _ in train])
    cams = np.array([c for _, _, c in train])
    sim = f @ f.T
    same = pids[:, None] == pids[None, :]
    off_diag = ~np.eye(len(pids), dtype=bool)
    same_mean, diff_mean = sim[same & off_diag].mean(), sim[~same].mean()
    assert same_mean > diff_mean + 0.1, (same_mean, diff_mean)

    # Cross-camera nearest neighbour: far better than chance, yet often another identity.
    sim[cams[:, None] == cams[None, :]] = -np.inf
    nn = sim.argmax(axis=1)
    correct = float((pids[nn] == pids).mean())
    chance = 1.0 / len(set(pids))
    assert correct > 3 * chance, correct
    assert 1.0 - correct > 0.2, correct  # lookalikes, cameras and clutter make real errors


def test_lookalike_groups_share_shirt_not_trousers() -> None:
    idents = _make_identities(list(range(1, 61)), np.random.default_rng(3), lookalike_prob=0.6)
    assert [d.pid for d in idents] == list(range(1, 61))
    groups: Dict[tuple, list] = defaultdict(list)
    for d in idents:
        groups[(d.upper, d.upper2, d.pattern, d.long_sleeves)].append(d)
    multi = [g for g in groups.values() if len(g) > 1]
    assert len(multi) >= 5
    for g in multi:  # same shirt, told apart only below the waist
        assert len({d.lower for d in g}) == len(g)


def test_dataset_present(tmp_path) -> None:
    root = str(tmp_path / "images")
    assert not dataset_present(root)
    train_dir = os.path.join(dataset_root(root), "bounding_box_train")
    os.makedirs(train_dir)
    assert not dataset_present(root)  # a folder without jpgs is no dataset
    make_synthetic_reid(root, num_ids=4, seed=5, images_per_id=(4, 6), overwrite=True)
    assert dataset_present(root)


def test_user_errors_name_the_culprit(tmp_path) -> None:
    out = str(tmp_path)
    with pytest.raises(ConfigError, match="num_ids"):
        make_synthetic_reid(out, num_ids=1)
    with pytest.raises(ConfigError, match="images_per_id"):
        make_synthetic_reid(out, num_ids=4, images_per_id=(3, 5))
    with pytest.raises(ConfigError, match="cams_per_id"):
        make_synthetic_reid(out, num_ids=4, cams_per_id=(1, 7))
    with pytest.raises(ConfigError, match="colour"):
        make_synthetic_reid(out, num_ids=4, colour=1)
    with pytest.raises(ConfigError, match="occlusion_prob"):
        make_synthetic_reid(out, num_ids=4, occlusion_prob=1.5)
    make_synthetic_reid(out, num_ids=4, seed=0, images_per_id=4)
    with pytest.raises(DataError, match="not empty"):
        make_synthetic_reid(out, num_ids=4, seed=0, images_per_id=4)
    s = make_synthetic_reid(out, num_ids=6, seed=0, images_per_id=4, overwrite=True)
    assert s["num_train_ids"] == 3 and s["num_train_images"] == 12


def _load_cli():
    path = os.path.join(os.path.dirname(__file__), "..", "tools", "make_synthetic_reid.py")
    spec = importlib.util.spec_from_file_location("make_synthetic_reid_cli", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_cli(tmp_path, capsys) -> None:
    cli = _load_cli()
    out = str(tmp_path / "cli")
    assert cli.main(["--out", out, "--ids", "6", "--seed", "2", "--images-per-id", "4", "6"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["root"] == dataset_root(out) and summary["num_train_ids"] == 3
    assert dataset_present(out)
    assert cli.main(["--out", out, "--ids", "6"]) == 2  # refuses to overwrite silently
    assert "not empty" in capsys.readouterr().err


def test_source_set_is_disjoint_and_mostly_train(tmp_path) -> None:
    target = make_synthetic_reid(str(tmp_path / "t"), num_ids=10, seed=0, images_per_id=4)
    source = make_source_set(str(tmp_path / "s"), num_ids=10, seed=0, images_per_id=4)
    ids = {}
    for key, s in (("t", target), ("s", source)):
        ids[key] = {p for sp in SPLITS for _, p, _ in _records(s["root"], sp)} - {0, -1}
    assert ids["t"] == set(range(1, 11)) and ids["s"] == set(range(1001, 1011))
    assert source["seed"] == 1000 and source["num_train_ids"] == 8 and source["num_test_ids"] == 2
    with pytest.raises(ConfigError, match="id_offset"):
        make_synthetic_reid(str(tmp_path / "x"), num_ids=10, id_offset=1495)
    with pytest.raises(ConfigError, match="train_fraction"):
        make_synthetic_reid(str(tmp_path / "x"), num_ids=10, train_fraction=1.0)
