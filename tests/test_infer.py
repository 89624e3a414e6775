"""tools/infer.py and ppise.engine.infer: PaddleClas's Infer section on a tiny synthetic Market-1501."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tiny import DEMO, make_data, run_tool, tiny_overrides


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from synthreid import dataset_root

    data = make_data(str(tmp_path_factory.mktemp("infer_data")))
    root = dataset_root(data)
    query = os.path.join(root, "query")
    names = sorted(os.listdir(query))[:6]
    list_file = str(tmp_path_factory.mktemp("lists") / "some.txt")
    with open(list_file, "w") as f:
        f.write("".join(f"{n}\n" for n in names[:3]))  # relative paths: taken from the list's folder
    os.replace(list_file, os.path.join(query, "some.txt"))
    return {"data": data, "root": root, "query": query, "names": names, "list": os.path.join(query, "some.txt"),
            "out": str(tmp_path_factory.mktemp("infer_out"))}


def _cfg(env, *extra):
    from ppise.config import get_config

    return get_config(DEMO, tiny_overrides(env["data"], env["out"]) + ["Global.seed=7"] + list(extra))


def _model(cfg):
    from ppise.engine.builder import build_model_from_config
    from ppise.utils.seed import seed_everything

    seed_everything(7)
    return build_model_from_config(cfg)


def test_infer_features_equal_evaluation_features(env):
    """Same decoding and transforms as DataLoader.Eval.Query: same features for the same files."""
    from ppise.engine.evaluator import build_eval_loader
    from ppise.engine.extract import extract_features
    from ppise.engine.infer import run_infer

    cfg = _cfg(env, f"Infer.infer_imgs={env['query']}", "Infer.batch_size=5")
    model = _model(cfg)
    results = run_infer(model, cfg)
    loader, dataset = build_eval_loader(cfg, "Query")
    ref = extract_features(model, loader)
    by_name = {os.path.basename(p): f for p, f in zip(dataset.images, ref["feats"])}
    assert len(results) == len(by_name) == len([n for n in os.listdir(env["query"]) if n.endswith(".jpg")])
    feats = np.asarray([r["feature"] for r in results], np.float32)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    for r in results:
        np.testing.assert_allclose(r["feature"], by_name[os.path.basename(r["file"])], atol=1e-5)


def test_image_folder_and_list_inputs_agree(env):
    from ppise.engine.infer import run_infer

    first = os.path.join(env["query"], env["names"][0])
    cfg = _cfg(env)
    model = _model(cfg)
    one = run_infer(model, _cfg(env, f"Infer.infer_imgs={first}"))
    listed = run_infer(model, _cfg(env, f"Infer.infer_imgs={env['list']}", "Infer.batch_size=2"))
    assert [os.path.basename(r["file"]) for r in listed] == env["names"][:3]
    np.testing.assert_allclose(one[0]["feature"], listed[0]["feature"], atol=1e-5)


def test_gallery_topk_finds_the_image_itself(env, tmp_path):
    from ppise.engine.infer import run_infer

    post = "Infer.PostProcess={name: Topk, topk: 4, gallery: " + env["query"] + "}"
    cfg = _cfg(env, f"Infer.infer_imgs={env['list']}", post, f"Infer.save_features={tmp_path / 'q.npz'}")
    results = run_infer(_model(cfg), cfg)
    assert len(results) == 3
    for r in results:
        assert len(r["topk"]) == 4
        assert os.path.basename(r["topk"][0]["file"]) == os.path.basename(r["file"])  # itself is in the gallery
        assert r["topk"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        scores = [t["score"] for t in r["topk"]]
        assert scores == sorted(scores, reverse=True)
        assert r["topk"][0]["pid"] == -1  # a folder carries no ids
    saved = np.load(tmp_path / "q.npz")
    assert saved["feats"].shape[0] == 3 and [os.path.basename(p) for p in saved["paths"]] == env["names"][:3]


def test_paddleclas_transforms_with_decode_image(env):
    from ppise.engine.infer import run_infer

    ops = ("[{DecodeImage: {to_rgb: True, channel_first: False}}, {ResizeImage: {size: [32, 64]}}, "
           "{NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''}}, "
           "{ToCHWImage: null}]")
    first = os.path.join(env["query"], env["names"][0])
    cfg = _cfg(env, f"Infer.infer_imgs={first}", f"Infer.transforms={ops}")
    assert len(run_infer(_model(cfg), cfg)[0]["feature"]) == 32


def test_infer_config_errors(env):
    from ppise.engine.infer import infer_settings
    from ppise.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        infer_settings(_cfg(env, "Infer.batch_sise=3", f"Infer.infer_imgs={env['query']}"))
    with pytest.raises(ConfigError, match="Infer.infer_imgs is not set"):
        infer_settings(_cfg(env))
    with pytest.raises(ConfigError, match="PostProcess.name must be one of Topk"):
        infer_settings(_cfg(env, f"Infer.infer_imgs={env['query']}", "Infer.PostProcess={name: Softmax}"))


def test_tool_prints_json_lines(env):
    first = os.path.join(env["query"], env["names"][0])
    proc = run_tool("tools/infer.py", tiny_overrides(env["data"], env["out"]) + [f"Infer.infer_imgs={first}",
                                                                                 f"Infer.gallery={env['query']}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1 and len(lines[0]["topk"]) == 5
    bad = run_tool("tools/infer.py", tiny_overrides(env["data"], env["out"]) + ["Infer.infer_imgs=/nonexistent.jpg"])
    assert bad.returncode == 2 and "image path not found" in bad.stderr
