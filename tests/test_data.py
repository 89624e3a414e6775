"""Data pipeline: datasets on tiny real jpgs, transform semantics, samplers, worker DataLoader."""
from __future__ import annotations

import os
import random

import cv2
import numpy as np
import pytest
from PIL import Image

from ppise.data import (BatchSampler, NormalizeImage, Pad, PKSampler, RandFlipImage, RandomCrop, RandomErasing,
                        RandomMultipleGallerySampler, ResizeImage, ToCHWImage, build_dataloader, build_dataset,
                        build_sampler, build_transforms)
from ppise.data.datasets import MSMT17, Market1501
from ppise.errors import ConfigError, DataError, TrainingError

MARKET = "market1501/Market-1501-v15.09.15"
EVAL_OPS = [
    {"ResizeImage": {"size": [16, 32]}},
    {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "order": ""}},
]
TRAIN_OPS = [
    {"ResizeImage": {"size": [16, 32], "interpolation": "bilinear"}},
    {"RandFlipImage": {"flip_code": 1}},
    {"Pad": {"padding": 2}},
    {"RandomCrop": {"size": [16, 32]}},
    {"NormalizeImage": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "order": ""}},
    {"RandomErasing": {"EPSILON": 0.5, "mean": [0.485, 0.456, 0.406]}},
]


def _write(folder: str, name: str, seed: int, hw=(24, 12)) -> str:
    os.makedirs(folder, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    path = os.path.join(folder, name)
    cv2.imwrite(path, img)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    """6 ids x 4 images over cameras c1-c3, 2 junk images, and a 4-image query set (30 jpgs)."""
    base = str(tmp_path_factory.mktemp("reid"))
    train = os.path.join(base, MARKET, "bounding_box_train")
    for pid in range(1, 7):
        for k in range(4):
            _write(train, f"{pid:04d}_c{k % 3 + 1}s1_{k:06d}_00.jpg", pid * 10 + k)
    _write(train, "-1_c1s1_000001_00.jpg", 900)
    _write(train, "-1_c2s1_000002_00.jpg", 901)
    for pid in range(1, 5):
        _write(os.path.join(base, MARKET, "query"), f"{pid:04d}_c6s1_000000_00.jpg", 500 + pid)
    return base


def _section(root: str, split: str = "bounding_box_train", ops=None) -> dict:
    return {"dataset": {"name": "Market1501", "image_root": root, "cls_label_path": split, "transform_ops": ops}}


# ---------------------------------------------------------------- datasets
def test_market_counts_junk_and_cameras(root):
    ds = Market1501(root, "bounding_box_train")
    assert len(ds) == 24 and ds.describe() == {"num_images": 24, "num_ids": 6, "num_cameras": 3}
    assert ds.images == sorted(ds.images) and not any("-1_c" in os.path.basename(p) for p in ds.images)
    assert ds.labels.dtype == np.int64 and ds.cameras.dtype == np.int64
    assert set(ds.labels.tolist()) == set(range(1, 7))  # raw ids, no relabelling
    assert set(ds.cameras.tolist()) == {0, 1, 2}
    first = os.path.basename(ds.images[0])
    assert first.startswith("0001_c1") and ds.labels[0] == 1 and ds.cameras[0] == 0
    query = Market1501(root, "query")
    assert query.cameras.tolist() == [5, 5, 5, 5]


def test_getitem_is_chw_float32_with_or_without_tochw(root):
    ds = build_dataset(_section(root, ops=EVAL_OPS), "DataLoader.Eval.Query")
    img, pid, cam, idx = ds[3]
    assert img.shape == (3, 32, 16) and img.dtype == np.float32
    assert (pid, cam, idx) == (ds.labels[3], ds.cameras[3], 3) and isinstance(idx, np.int64)
    ds_chw = build_dataset(_section(root), "DataLoader.Eval.Query", transform_ops=EVAL_OPS + [{"ToCHWImage": None}])
    np.testing.assert_array_equal(ds_chw[3][0], img)  # no double transpose
    plain = Market1501(root, "bounding_box_train")  # no ops: the decoded RGB pixels, CHW
    expected = np.asarray(Image.open(plain.images[0]).convert("RGB"))
    np.testing.assert_array_equal(plain[0][0], expected.transpose(2, 0, 1).astype(np.float32))


def test_msmt17_layout_and_two_digit_cameras(tmp_path):
    folder = tmp_path / "msmt17" / "MSMT17_V1" / "bounding_box_test"
    _write(str(folder), "0007_c12_0001.jpg", 1)
    _write(str(folder), "0008_c3_0002.jpg", 2)
    ds = MSMT17(str(tmp_path), "bounding_box_test")
    assert ds.labels.tolist() == [7, 8] and ds.cameras.tolist() == [11, 2]


def test_missing_and_empty_folders_name_path_and_keys(tmp_path):
    with pytest.raises(DataError) as info:
        build_dataset(_section(str(tmp_path), "bounding_box_nope"), "DataLoader.Train")
    msg = str(info.value)
    assert os.path.join(str(tmp_path), MARKET, "bounding_box_nope") in msg
    assert "image_root" in msg and "cls_label_path" in msg
    os.makedirs(tmp_path / MARKET / "empty")
    with pytest.raises(DataError, match="no .jpg"):
        Market1501(str(tmp_path), "empty")


def test_corrupt_image_names_its_path(tmp_path):
    folder = tmp_path / MARKET / "query"
    _write(str(folder), "0001_c1s1_000000_00.jpg", 3)
    bad = folder / "0002_c2s1_000000_00.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = Market1501(str(tmp_path), "query", check_images="off")  # the build-time scan would skip it
    assert ds[0][0].shape[0] == 3
    with pytest.raises(DataError, match=str(bad).replace("\\", "\\\\")):
        ds[1]


def test_unknown_dataset_name_lists_registered(root):
    with pytest.raises(ConfigError, match="DataLoader.Train.dataset.name.*Market1501"):
        build_dataset({"dataset": {"name": "Market", "image_root": root}}, "DataLoader.Train")


# ---------------------------------------------------------------- transforms
def test_resize_size_is_w_h_for_both_backends():
    img = np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8)
    assert ResizeImage(size=[128, 256])(img).shape == (256, 128, 3)
    out = ResizeImage(size=[20, 30], interpolation="bicubic", backend="pil")(img)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(img).resize((20, 30), Image.BICUBIC)))
    assert ResizeImage(resize_short=20)(img).shape == (25, 20, 3)
    with pytest.raises(ConfigError, match="bilinear"):
        ResizeImage(size=[8, 8], interpolation="cubic-ish")


def test_rand_flip_is_horizontal_and_random():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    random.seed(0)
    outs = [RandFlipImage(flip_code=1)(img) for _ in range(40)]
    flipped = sum(np.array_equal(o, img[:, ::-1]) for o in outs)
    kept = sum(np.array_equal(o, img) for o in outs)
    assert flipped + kept == 40 and 5 < flipped < 35


def test_pad_then_random_crop_sizes_and_content():
    img = np.random.default_rng(1).integers(1, 256, (32, 16, 3), dtype=np.uint8)
    padded = Pad(padding=10, fill=0)(img)
    assert padded.shape == (52, 36, 3)
    np.testing.assert_array_equal(padded[10:42, 10:26], img)
    assert padded[:10].max() == 0 and padded[:, :10].max() == 0
    assert Pad(padding=[1, 2, 3, 4])(img).shape == (32 + 6, 16 + 4, 3)
    random.seed(3)
    crop = RandomCrop(size=[16, 32])(padded)  # size is [w, h]
    assert crop.shape == (32, 16, 3)
    hits = [(t, l) for t in range(21) for l in range(21) if np.array_equal(padded[t:t + 32, l:l + 16], crop)]
    assert hits
    assert RandomCrop(size=[20, 40], pad_if_needed=True)(img).shape == (40, 20, 3)
    with pytest.raises(ConfigError, match="pad_if_needed"):
        RandomCrop(size=[20, 40])(img)


def test_normalize_values_and_order():
    img = np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    mean, std = np.array([0.5, 0.4, 0.3], np.float32), np.array([0.2, 0.25, 0.5], np.float32)
    out = NormalizeImage(scale="1.0/255.0", mean=mean.tolist(), std=std.tolist(), order="")(img)
    np.testing.assert_allclose(out, (img / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32
    chw = NormalizeImage(mean=mean.tolist(), std=std.tolist())(img.transpose(2, 0, 1))  # default order 'chw'
    np.testing.assert_allclose(chw, out.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(NormalizeImage(order="")(img)[0, 0],
                               (img[0, 0] / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], rtol=1e-5)
    with pytest.raises(ConfigError, match="order"):
        NormalizeImage()(img)  # HWC image with the CHW default


def test_random_erasing_erases_a_rectangle_with_mean():
    mean = [0.25, 0.5, 0.75]
    random.seed(4)
    for _ in range(10):
        img = np.full((64, 32, 3), 9.0, np.float32)
        out = RandomErasing(EPSILON=1, mean=mean)(img.copy())
        changed = np.any(out != 9.0, axis=2)
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        assert rows.size and cols.size
        assert changed[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # a filled rectangle
        np.testing.assert_allclose(out[changed], np.broadcast_to(mean, (changed.sum(), 3)))
        area = changed.sum() / changed.size
        assert 0.02 * 0.8 <= area <= 0.4 * 1.2
    img = np.full((64, 32, 3), 9.0, np.float32)
    assert all(np.array_equal(RandomErasing(EPSILON=0, mean=mean)(img.copy()), img) for _ in range(50))


def test_to_chw_and_compose_layout_flag():
    img = np.zeros((5, 4, 3), np.uint8)
    assert ToCHWImage()(img).shape == (3, 5, 4)
    assert build_transforms([{"ToCHWImage": None}], "x").outputs_chw
    assert not build_transforms(EVAL_OPS, "x").outputs_chw


def test_paddleclas_reid_eval_ops_pil_totensor_normalize(root):
    """The op list of PaddleClas's re-ID configs (PIL backend, paddle.vision ToTensor + Normalize)."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    sec = _section(root, ops=[{"ResizeImage": {"size": [16, 32], "return_numpy": False, "interpolation": "bilinear",
                                               "backend": "pil"}},
                              {"ToTensor": None}, {"Normalize": {"mean": mean, "std": std}}])
    sec["dataset"]["backend"] = "pil"
    img = build_dataset(sec, "DataLoader.Eval.Query")[2][0]
    path = Market1501(root, "bounding_box_train").images[2]
    ref = np.asarray(Image.open(path).convert("RGB").resize((16, 32), Image.BILINEAR), np.float32) / 255.0
    np.testing.assert_allclose(img, ((ref - mean) / std).transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_eval_ops_are_deterministic(root):
    ds = build_dataset(_section(root, ops=EVAL_OPS), "DataLoader.Eval.Gallery")
    np.testing.assert_array_equal(ds[5][0], ds[5][0])


def test_unknown_op_names_path_and_registered_ops():
    with pytest.raises(ConfigError) as info:
        build_transforms([{"ResizeImage": {"size": [8, 8]}}, {"RandomFlip": {}}], "DataLoader.Train.dataset.transform_ops")
    msg = str(info.value)
    assert "DataLoader.Train.dataset.transform_ops[1]" in msg and "RandomFlip" in msg
    for name in ("ResizeImage", "RandFlipImage", "Pad", "RandomCrop", "NormalizeImage", "RandomErasing", "ToCHWImage"):
        assert name in msg
    with pytest.raises(ConfigError, match=r"transform_ops\[0\].ResizeImage"):
        build_transforms([{"ResizeImage": {"sise": [8, 8]}}], "DataLoader.Train.dataset.transform_ops")


# ---------------------------------------------------------------- samplers
def _pseudo_labels(num_ids=10, per_id=6, outliers=7, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.repeat(np.arange(num_ids), per_id), -np.ones(outliers, np.int64)])
    order = rng.permutation(labels.size)
    return labels[order], rng.integers(0, 4, labels.size)[order]


def test_rmgs_structure_no_outliers_and_length():
    labels, cams = _pseudo_labels()
    s = RandomMultipleGallerySampler(labels, cams, batch_size=16, num_instances=4, iters_per_epoch=25, rule="distinct")
    batches = list(s)
    assert len(batches) == len(s) == 25
    for b in batches:
        b = np.asarray(b)
        assert b.size == 16 and (labels[b] >= 0).all()
        groups = labels[b].reshape(4, 4)
        assert (groups == groups[:, :1]).all() and np.unique(groups[:, 0]).size == 4
        for g in b.reshape(4, 4):
            assert np.unique(g).size == 4  # every id has >= K images: no replacement


def test_rmgs_prefers_other_cameras():
    num_ids, k = 20, 4
    labels = np.repeat(np.arange(num_ids), 10)
    cams = np.tile(np.r_[np.zeros(9, np.int64), 1], num_ids)  # 9 images in camera 0, one in camera 1
    s = RandomMultipleGallerySampler(labels, cams, batch_size=16, num_instances=k, iters_per_epoch=50, seed=1,
                                     rule="distinct")
    groups = np.concatenate([np.asarray(b).reshape(-1, k) for b in s])
    ours = np.mean([np.unique(cams[g]).size > 1 for g in groups])
    rng = np.random.default_rng(0)
    members = np.arange(10)
    random_rate = np.mean([np.unique(cams[rng.choice(members, k, replace=False)]).size > 1 for _ in range(2000)])
    assert ours == 1.0 and random_rate < 0.5


def test_rmgs_deterministic_by_seed_and_epoch():
    labels, cams = _pseudo_labels()
    a = RandomMultipleGallerySampler(labels, cams, 16, iters_per_epoch=5, seed=3)
    b = RandomMultipleGallerySampler(labels, cams, 16, iters_per_epoch=5, seed=3)
    assert list(a) == list(b) == list(a)
    epoch0 = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != epoch0
    c = RandomMultipleGallerySampler(labels, cams, 16, iters_per_epoch=5, seed=4)
    assert list(c) != epoch0


def test_rmgs_ranks_share_the_global_batch():
    labels, cams = _pseudo_labels()
    whole = RandomMultipleGallerySampler(labels, cams, 16, num_instances=4, iters_per_epoch=6, seed=5)
    ranks = [RandomMultipleGallerySampler(labels, cams, 16, num_instances=4, iters_per_epoch=6, seed=5,
                                          rank=r, world_size=2) for r in range(2)]
    for s in [whole, *ranks]:
        s.set_epoch(2)
    for g, r0, r1 in zip(whole, *ranks):
        assert len(r0) == len(r1) == 8 and r0 + r1 == g
        assert not set(labels[r0]) & set(labels[r1])  # whole identities per rank
    with pytest.raises(ConfigError, match="DataLoader.Train.sampler.batch_size"):
        RandomMultipleGallerySampler(labels, cams, 16, num_instances=4, world_size=3)


def test_rmgs_too_few_clusters_names_the_knobs():
    # fewer clusters than P: this epoch uses P = clusters (P shrinking lives in the sampler) ...
    labels = np.r_[np.repeat(np.arange(3), 5), -np.ones(20, np.int64)]
    fitted = RandomMultipleGallerySampler(labels, np.zeros_like(labels), batch_size=16, num_instances=4)
    assert (fitted.num_ids_per_batch, fitted.batch_size) == (3, 12)
    assert all(len(b) == 12 and len(set(labels[b])) == 3 for b in fitted)
    # ... and too few to form any batch of identities is an error naming the knobs
    labels = np.r_[np.repeat(np.arange(1), 5), -np.ones(20, np.int64)]
    with pytest.raises(TrainingError) as info:
        RandomMultipleGallerySampler(labels, np.zeros_like(labels), batch_size=16, num_instances=4)
    msg = str(info.value)
    assert "only 1 clusters" in msg and "P" in msg and "= 4" in msg
    for knob in ("Cluster.eps", "Cluster.min_samples", "Cluster.k1", "batch_size", "num_instances"):
        assert knob in msg


def test_rmgs_small_cluster_repeats_with_replacement():
    labels = np.r_[np.zeros(1, np.int64), np.ones(2, np.int64), np.full(6, 2)]
    s = RandomMultipleGallerySampler(labels, np.zeros_like(labels), batch_size=12, num_instances=4, iters_per_epoch=3)
    for b in s:
        assert len(b) == 12 and sorted(set(labels[b])) == [0, 1, 2]
        for g in np.asarray(b).reshape(3, 4):
            assert labels[g[0]] in (0, 1) or np.unique(g).size == 4


def test_pk_sampler_structure():
    labels, cams = _pseudo_labels(num_ids=8, per_id=5, outliers=5)
    s = build_sampler({"name": "PKSampler", "batch_size": 12, "sample_per_id": 3}, labels, cams,
                      "DataLoader.Train.sampler", seed=2)
    assert isinstance(s, PKSampler)
    batches = list(s)
    assert len(batches) == len(s) == (labels >= 0).sum() // 12
    for b in batches:
        groups = labels[np.asarray(b)].reshape(4, 3)
        assert (groups >= 0).all() and (groups == groups[:, :1]).all() and np.unique(groups[:, 0]).size == 4


@pytest.mark.parametrize("n,world,batch", [(10, 3, 2), (7, 2, 4), (5, 1, 2), (9, 4, 3)])
def test_batch_sampler_shards_cover_every_index_once(n, world, batch):
    labels = np.zeros(n, np.int64)
    samplers = [build_sampler({"name": "DistributedBatchSampler", "batch_size": batch, "shuffle": True,
                               "drop_last": False}, labels, None, "DataLoader.Eval.Query.sampler",
                              rank=r, world_size=world, seed=7) for r in range(world)]
    assert len({len(s) for s in samplers}) == 1
    gathered = []
    for s in samplers:
        s.set_epoch(1)
        flat = [i for b in s for i in b]
        assert len(flat) == s.num_samples and s.valid_mask.size == s.num_samples
        gathered.append(np.asarray(flat))
    kept = np.concatenate(gathered)[:n]
    assert sorted(kept.tolist()) == list(range(n))
    kept_by_mask = np.concatenate([g[s.valid_mask] for g, s in zip(gathered, samplers)])
    np.testing.assert_array_equal(kept, kept_by_mask)
    plain = BatchSampler(labels, None, batch_size=batch)
    assert [i for b in plain for i in b] == list(range(n))


# ---------------------------------------------------------------- loader
def test_dataloader_with_two_workers(root):
    ds = build_dataset(_section(root, ops=TRAIN_OPS), "DataLoader.Train")
    sampler = build_sampler({"name": "RandomMultipleGallerySampler", "batch_size": 8, "num_instances": 4,
                             "iters_per_epoch": 3}, ds.labels, ds.cameras, "DataLoader.Train.sampler")
    loader = build_dataloader(ds, sampler, {"num_workers": 2, "use_shared_memory": True})
    batches = list(loader)
    assert len(batches) == 3
    for images, pids, camids, idx in batches:
        assert images.shape == [8, 3, 32, 16] and str(images.dtype) == "paddle.float32"
        assert pids.shape == camids.shape == idx.shape == [8]
        assert all(str(t.dtype) == "paddle.int64" for t in (pids, camids, idx))
        np.testing.assert_array_equal(pids.numpy(), ds.labels[idx.numpy()])
        np.testing.assert_array_equal(camids.numpy(), ds.cameras[idx.numpy()])


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_data_error_keeps_the_path(tmp_path, workers):
    folder = tmp_path / MARKET / "bounding_box_test"
    for k in range(6):
        _write(str(folder), f"{k + 1:04d}_c1s1_000000_00.jpg", k)
    bad = folder / "0009_c2s1_000000_00.jpg"
    bad.write_bytes(b"broken")
    section = _section(str(tmp_path), "bounding_box_test", EVAL_OPS)
    section["dataset"]["check_images"] = "off"  # test the read-time error, past the build-time scan
    ds = build_dataset(section, "DataLoader.Eval.Gallery")
    sampler = build_sampler({"name": "DistributedBatchSampler", "batch_size": 4}, ds.labels, ds.cameras,
                            "DataLoader.Eval.Gallery.sampler")
    with pytest.raises(DataError) as info:
        list(build_dataloader(ds, sampler, {"num_workers": workers}))
    assert str(bad) in str(info.value)


def test_seeded_workers_reproduce_augmentation(root):
    ds = build_dataset(_section(root, ops=TRAIN_OPS), "DataLoader.Train")
    sampler = build_sampler({"name": "BatchSampler", "batch_size": 6}, ds.labels, ds.cameras, "s")

    def run(seed):
        np.random.seed(seed)
        random.seed(seed)
        return np.concatenate([b[0].numpy() for b in build_dataloader(ds, sampler, {"num_workers": 2})])

    first = run(11)
    np.testing.assert_array_equal(first, run(11))
    assert not np.array_equal(first, run(12))
