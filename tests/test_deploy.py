"""Deploy path: export (PIR and legacy) -> Paddle Inference -> faiss gallery -> search / eval / PNG.

One tiny synthetic Market set, one random-init ResNetMini checkpoint and one export per format
per session (module fixtures); the scripts run as subprocesses, as users run them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List

import cv2
import numpy as np
import pytest

from ppise.errors import ConfigError, DataError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEMO = os.path.join(ROOT, "configs", "ise_demo.yaml")
DEPLOY_CFG = os.path.join(ROOT, "deploy", "configs", "inference_rec.yaml")
MARKET = os.path.join("market1501", "Market-1501-v15.09.15")
METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


def demo_shape() -> List[int]:
    """[C, H, W] of the demo config: the export's input and the eval resize follow it."""
    from ppise.config import get_config

    return list(get_config(DEMO)["Global"]["image_shape"])


def _run(args: List[str], cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """Synthetic set (8 ids), a random-init checkpoint, and exports in both formats."""
    import paddle

    from ppise.arch import build_model
    from ppise.config import get_config
    from synthreid import make_synthetic_reid
    from ppise.deploy.export import export_model

    base = tmp_path_factory.mktemp("deploy")
    data = str(base / "syn")
    make_synthetic_reid(data, num_ids=8, seed=3)
    ckpt = str(base / "demo.pdparams")
    paddle.seed(7)
    overrides = [f"DataLoader.{s}.dataset.image_root={data}" for s in ("Train", "Eval.Query", "Eval.Gallery")]
    overrides += ["Global.synthetic_dataset=null", "DataLoader.Eval.Query.loader.num_workers=0",
                  "DataLoader.Eval.Gallery.loader.num_workers=0"]
    model = build_model(get_config(DEMO, overrides)["Arch"])
    paddle.save(model.state_dict(), ckpt)
    overrides.append(f"Global.pretrained_model={ckpt}")
    cfg = get_config(DEMO, overrides + [f"Global.save_inference_dir={base / 'pir'}"])
    export_model(cfg)  # in-process, PIR
    _ok(_run(["tools/export_model.py", "-c", DEMO, *sum((["-o", o] for o in overrides), []),
              "-o", f"Global.save_inference_dir={base / 'legacy'}", "-o", "Global.export_format=legacy"], ROOT))
    return {"base": str(base), "data": data, "ckpt": ckpt, "pir": str(base / "pir"), "legacy": str(base / "legacy"),
            "query": os.path.join(data, MARKET, "query"), "gallery": os.path.join(data, MARKET, "bounding_box_test"),
            "overrides": overrides}


def test_export_writes_both_formats_and_inference_yml(env: Dict[str, str]) -> None:
    from ppise.deploy.model_info import read_info

    assert sorted(f for f in os.listdir(env["pir"]) if f.startswith("inference")) == [
        "inference.json", "inference.pdiparams", "inference.yml"]
    assert {"inference.pdmodel", "inference.pdiparams", "inference.yml"} <= set(os.listdir(env["legacy"]))
    assert not os.path.exists(os.path.join(env["legacy"], "inference.json"))
    for fmt in ("pir", "legacy"):
        info = read_info(env[fmt])
        assert info["Model"]["format"] == fmt
        c, h, w = demo_shape()
        assert info["Model"]["input_shape"] == [None, c, h, w]
        assert info["Model"]["feature_dim"] == 256 and info["Model"]["normalized_in_graph"] is False
        assert info["PreProcess"]["resize"]["size_wh"] == [w, h]
        assert info["PreProcess"]["normalize"]["mean"] == [0.485, 0.456, 0.406]
        assert [list(op)[0] for op in info["PreProcess"]["transform_ops"]] == ["ResizeImage", "NormalizeImage"]


@pytest.mark.parametrize("fmt", ["pir", "legacy"])
def test_exported_features_equal_dygraph(env: Dict[str, str], fmt: str) -> None:
    import paddle

    from ppise.config import get_config
    from ppise.deploy.predictor import RecPredictor
    from ppise.engine.builder import build_model_from_config

    paths = sorted(os.path.join(env["query"], n) for n in os.listdir(env["query"]))[:6]
    predictor = RecPredictor(env[fmt], batch_size=4, enable_mkldnn=True, cpu_num_threads=1)
    batch = predictor.preprocess(paths)
    assert batch.shape == (6, *demo_shape())
    model = build_model_from_config(get_config(DEMO, env["overrides"]))
    model.eval()
    with paddle.no_grad():
        ref = model.inference_output(model(paddle.to_tensor(batch))).numpy()
    got = predictor.run(batch)  # raw graph output: not normalised, like PaddleClas
    assert got.shape == ref.shape == (6, 256)
    assert np.max(np.abs(got - ref)) <= 1e-4
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)
    feats = predictor.extract(paths)  # batched over 4 + 2, L2-normalised
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(feats, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-4)


def test_deploy_eval_equals_tools_eval(env: Dict[str, str]) -> None:
    out_dir = os.path.join(env["base"], "eval")
    _ok(_run(["tools/eval.py", "-c", DEMO, *sum((["-o", o] for o in env["overrides"]), []),
              "-o", f"Global.output_dir={out_dir}"], ROOT))
    with open(os.path.join(out_dir, "eval_metrics.json")) as f:
        ref = json.load(f)
    index_dir = os.path.join(env["base"], "gallery_flat")
    common = ["-c", DEPLOY_CFG, "-o", f"Global.inference_model_dir={env['pir']}", "-o", f"IndexProcess.index_dir={index_dir}"]
    built = json.loads(_ok(_run(["deploy/python/build_gallery.py", *common, "-o",
                                 f"IndexProcess.image_root={env['gallery']}"], ROOT)).stdout)
    assert built["count"] == ref["num_gallery"] and built["index_method"] == "Flat"
    out = json.loads(_ok(_run(["deploy/python/search.py", *common, "-o", f"Global.infer_imgs={env['query']}",
                               "--eval", "--metrics-only"], ROOT)).stdout)
    got = out["metrics"]
    assert got["num_query"] == ref["num_query"] and got["num_gallery"] == ref["num_gallery"]
    for key in METRIC_KEYS:
        assert abs(got[key] - ref[key]) <= 1e-4, (key, got[key], ref[key])


def test_search_json_and_visualisation(env: Dict[str, str]) -> None:
    from ppise.deploy.visualize import canvas_shape

    index_dir = os.path.join(env["base"], "gallery_hnsw")
    common = ["-c", DEPLOY_CFG, "-o", f"Global.inference_model_dir={env['legacy']}", "-o",
              f"IndexProcess.index_dir={index_dir}", "-o", "IndexProcess.index_method=HNSW"]
    _ok(_run(["deploy/python/build_gallery.py", *common, "-o", f"IndexProcess.image_root={env['gallery']}"], ROOT))
    queries = [os.path.join(os.path.relpath(env["query"], env["base"]), n) for n in sorted(os.listdir(env["query"]))[:2]]
    list_file = os.path.join(env["base"], "queries.txt")  # paths relative to the list file's folder
    with open(list_file, "w") as f:
        f.write("\n".join(queries) + "\n")
    png = os.path.join(env["base"], "hits.png")
    out = json.loads(_ok(_run(["deploy/python/search.py", *common, "-o", f"Global.infer_imgs={list_file}",
                               "--topk", "5", "--vis", png], ROOT)).stdout)
    assert out["index_method"] == "HNSW" and len(out["results"]) == 2
    for rec in out["results"]:
        scores = [h["score"] for h in rec["hits"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores)
    img = cv2.imread(png)
    # a 40 px legend + 2 rows of (8 + 16 name + 16 + 128 + 2*4 + 16 + 8) px; the legend's 616 px wide
    # (the hits take 8 + 72 + 24 + 5*72 + 4*8 + 8 = 504)
    assert img.shape == (40 + 2 * 200, 616, 3) == canvas_shape(2, 5) + (3,)
    assert out["vis"] == [{"path": png, "height": 440, "width": 616, "queries": 2}]
    assert img.std() > 10  # pictures were drawn, not a blank canvas


def _err(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc.stderr.strip().splitlines()[-1]


def test_clear_errors(env: Dict[str, str]) -> None:
    base = env["base"]
    missing = os.path.join(base, "no_such_weights.pdparams")
    line = _err(_run(["tools/export_model.py", "-c", DEMO, "-o", f"Global.pretrained_model={missing}",
                      "-o", f"Global.save_inference_dir={base}/never"], ROOT))
    assert line.startswith("ppise: error:") and missing in line and "Global.pretrained_model" in line
    assert not os.path.exists(os.path.join(base, "never"))

    no_model = os.path.join(base, "half_model")
    os.makedirs(no_model)
    open(os.path.join(no_model, "inference.pdiparams"), "wb").close()
    line = _err(_run(["deploy/python/predict_rec.py", "-o", f"Global.inference_model_dir={no_model}",
                      "-o", f"Global.infer_imgs={env['query']}"], ROOT))
    assert os.path.join(no_model, "inference.json") in line and "Global.inference_model_dir" in line

    bad = os.path.join(base, "notes.jpg")
    with open(bad, "w") as f:
        f.write("not a picture")
    line = _err(_run(["deploy/python/predict_rec.py", "-o", f"Global.inference_model_dir={env['pir']}",
                      "-o", f"Global.infer_imgs={bad}", "-o", f"Global.output_dir={base}/pred"], ROOT))
    assert f"cannot read image {bad}" in line

    empty = os.path.join(base, "empty_gallery")
    os.makedirs(empty)
    line = _err(_run(["deploy/python/build_gallery.py", "-o", f"Global.inference_model_dir={env['pir']}",
                      "-o", f"IndexProcess.image_root={empty}", "-o", f"IndexProcess.index_dir={base}/idx"], ROOT))
    assert empty in line and "no images" in line


def test_predict_rec_writes_features(env: Dict[str, str]) -> None:
    out_dir = os.path.join(env["base"], "pred_ok")
    out = json.loads(_ok(_run(["deploy/python/predict_rec.py", "-o", f"Global.inference_model_dir={env['pir']}",
                               "-o", f"Global.infer_imgs={env['query']}", "-o", f"Global.output_dir={out_dir}",
                               "-o", "Global.enable_mkldnn=False", "-o", "Global.batch_size=5"], ROOT)).stdout)
    feats = np.load(out["features"])
    with open(out["image_list"]) as f:
        names = f.read().split()
    assert feats.shape == (len(os.listdir(env["query"])), 256) == (len(names), 256)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------ in-process units (no model)


def test_indexes_rank_like_exact_search(tmp_path) -> None:
    from ppise.deploy.gallery import all_vectors, build_index, load_gallery, save_gallery

    rng = np.random.RandomState(0)
    g = rng.standard_normal((600, 32)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = g[:50] + 0.05 * rng.standard_normal((50, 32)).astype(np.float32)
    exact = np.argsort(-(q @ g.T), axis=1)[:, :5]
    for method, params in (("Flat", {}), ("IVF", {"nlist": 16, "nprobe": 16}), ("HNSW", {"ef_search": 128})):
        index = build_index(g, method, **params)
        save_gallery(str(tmp_path / method), index, [f"{i}.jpg" for i in range(600)], np.arange(600),
                     np.zeros(600, np.int64), {"index_method": method})
        gal = load_gallery(str(tmp_path / method))
        _, rows = gal.index.search(q, 5)
        recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, exact)])
        assert recall >= (1.0 if method != "HNSW" else 0.95), (method, recall)
        np.testing.assert_allclose(all_vectors(gal.index), g, atol=1e-6)  # row order kept: ids stay aligned
        assert gal.paths[7] == "7.jpg" and gal.pids[7] == 7


def test_deploy_config_and_inputs(tmp_path) -> None:
    from ppise.deploy.config import load_deploy_config
    from ppise.deploy.images import list_images, with_market_ids

    cfg = load_deploy_config(DEPLOY_CFG, ["Global.batch_size=4", "IndexProcess.index_method=IVF",
                                          "Global.infer_imgs=0001"])
    assert cfg["Global"]["batch_size"] == 4 and cfg["Global"]["infer_imgs"] == "0001"
    with pytest.raises(ConfigError, match="Global.cpu_threads.*cpu_num_threads"):
        load_deploy_config(DEPLOY_CFG, ["Global.cpu_threads=4"])
    with pytest.raises(ConfigError, match="IndexProcess.index_method must be one of"):
        load_deploy_config(DEPLOY_CFG, ["IndexProcess.index_method=LSH"])
    for name in ("0002_c3s1_000451_03.jpg", "-1_c1s1_000001_00.jpg", "0007_c6s2_000100_01.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 4, 3), np.uint8))
    images = with_market_ids(list_images(str(tmp_path)), "IndexProcess.image_root")
    assert [os.path.basename(p) for p in images.paths] == ["0002_c3s1_000451_03.jpg", "0007_c6s2_000100_01.jpg"]
    assert images.pids.tolist() == [2, 7] and images.cams.tolist() == [2, 5]  # 0-based, as the datasets
    (tmp_path / "labels.txt").write_text("0002_c3s1_000451_03.jpg 5 1\n\n0007_c6s2_000100_01.jpg 9 2\n")
    labelled = list_images(str(tmp_path / "labels.txt"))
    assert labelled.pids.tolist() == [5, 9] and labelled.cams.tolist() == [1, 2]
    assert labelled.paths[0] == str(tmp_path / "0002_c3s1_000451_03.jpg")
    with pytest.raises(DataError, match="Market-1501 naming"):
        (tmp_path / "other").mkdir()
        cv2.imwrite(str(tmp_path / "other" / "person.png"), np.zeros((8, 4, 3), np.uint8))
        with_market_ids(list_images(str(tmp_path / "other")), "IndexProcess.image_root")


# ------------------------------------------------------------------ real folders (issue 16 items 6, 8)


def _folder_with_bad_files(env: Dict[str, str], name: str, bad: int) -> str:
    """A copy of the query folder plus ``bad`` unusable files (0 bytes, text, truncated JPEG)."""
    import shutil

    folder = os.path.join(env["base"], name)
    shutil.copytree(env["query"], folder)
    good = sorted(os.listdir(folder))
    with open(os.path.join(folder, good[0]), "rb") as f:
        head = f.read()[:200]
    makers = [lambda p: open(p, "wb").close(), lambda p: open(p, "w").write("not a picture"),
              lambda p: open(p, "wb").write(head)]
    for i in range(bad):
        makers[i % 3](os.path.join(folder, f"9999_c1s1_bad{i}.jpg"))
    return folder


def test_predict_rec_lists_and_skips_bad_images(env: Dict[str, str]) -> None:
    folder = _folder_with_bad_files(env, "q_with_bad", 3)
    n_good = len(os.listdir(env["query"]))
    out_dir = os.path.join(env["base"], "pred_bad")
    args = ["deploy/python/predict_rec.py", "-o", f"Global.inference_model_dir={env['pir']}",
            "-o", f"Global.infer_imgs={folder}", "-o", f"Global.output_dir={out_dir}"]
    proc = _ok(_run(args, ROOT))
    out = json.loads(proc.stdout)
    assert out["count"] == n_good and np.load(out["features"]).shape[0] == n_good
    assert sorted(os.path.basename(b["path"]) for b in out["skipped"]) == ["9999_c1s1_bad0.jpg", "9999_c1s1_bad1.jpg", "9999_c1s1_bad2.jpg"]
    assert f"3 of {n_good + 3} images from Global.infer_imgs are unusable" in proc.stderr
    for i in range(3):
        assert f"9999_c1s1_bad{i}.jpg: " in proc.stderr
    with open(os.path.join(out_dir, "bad_images.txt")) as f:
        assert len(f.read().splitlines()) == 3
    proc = _run(args + ["-o", "Global.max_bad_image_ratio=0.01"], ROOT)
    assert proc.returncode == 2 and "more than Global.max_bad_image_ratio=0.01" in proc.stderr
    assert "9999_c1s1_bad2.jpg" in proc.stderr
    only_bad = os.path.join(env["base"], "only_bad")
    os.makedirs(only_bad)
    for i in range(2):
        open(os.path.join(only_bad, f"b{i}.jpg"), "wb").close()
    proc = _run(["deploy/python/predict_rec.py", "-o", f"Global.inference_model_dir={env['pir']}",
                 "-o", f"Global.infer_imgs={only_bad}", "-o", f"Global.output_dir={out_dir}2"], ROOT)
    assert proc.returncode == 2 and "2 of 2 images from Global.infer_imgs are unusable" in proc.stderr
    assert "nothing left to process" in proc.stderr


def test_search_takes_any_query_and_skips_bad_ones(env: Dict[str, str]) -> None:
    index_dir = os.path.join(env["base"], "gallery_any")
    common = ["-c", DEPLOY_CFG, "-o", f"Global.inference_model_dir={env['pir']}", "-o",
              f"IndexProcess.index_dir={index_dir}"]
    gallery = _folder_with_bad_files(env, "g_with_bad", 1)
    built = json.loads(_ok(_run(["deploy/python/build_gallery.py", *common, "-o",
                                 f"IndexProcess.image_root={gallery}"], ROOT)).stdout)
    assert [os.path.basename(b["path"]) for b in built["skipped"]] == ["9999_c1s1_bad0.jpg"]
    plain = os.path.join(env["base"], "plain_queries")
    os.makedirs(plain)
    src = sorted(os.listdir(env["query"]))[0]
    import shutil

    shutil.copy(os.path.join(env["query"], src), os.path.join(plain, "holiday photo.jpg"))
    open(os.path.join(plain, "broken.jpg"), "wb").close()
    out = json.loads(_ok(_run(["deploy/python/search.py", *common, "-o", f"Global.infer_imgs={plain}",
                               "-o", f"Global.output_dir={env['base']}/search_out", "--topk", "3"], ROOT)).stdout)
    assert [os.path.basename(r["query"]) for r in out["results"]] == ["holiday photo.jpg"]
    assert out["results"][0]["pid"] == -1 and len(out["results"][0]["hits"]) == 3
    assert [os.path.basename(b["path"]) for b in out["skipped"]] == ["broken.jpg"]


def test_empty_vector_index_names_file_and_fix(env: Dict[str, str]) -> None:
    index_dir = os.path.join(env["base"], "gallery_zero")
    common = ["-c", DEPLOY_CFG, "-o", f"Global.inference_model_dir={env['pir']}", "-o",
              f"IndexProcess.index_dir={index_dir}"]
    _ok(_run(["deploy/python/build_gallery.py", *common, "-o", f"IndexProcess.image_root={env['gallery']}"], ROOT))
    open(os.path.join(index_dir, "vector.index"), "wb").close()
    line = _err(_run(["deploy/python/search.py", *common, "-o", f"Global.infer_imgs={env['query']}"], ROOT))
    assert os.path.join(index_dir, "vector.index") in line and "empty (0 bytes)" in line
    assert "build_gallery.py" in line and f"IndexProcess.index_dir={index_dir}" in line
