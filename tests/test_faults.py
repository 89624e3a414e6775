"""Faults a new user meets (issue 16 items 1, 5-9) and the one Market file-name parser."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from ppise.errors import ConfigError, DataError

MARKET = os.path.join("market1501", "Market-1501-v15.09.15")


def _jpg(folder, name, seed=0, hw=(16, 8)):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(str(folder), name)
    cv2.imwrite(path, np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8))
    return path


# ---------------------------------------------------------------- one Market file-name parser

def test_one_market_name_parser_for_datasets_and_deploy(tmp_path):
    """Datasets and deploy read ids and cameras through one parser: same 0-based cameras,
    same names refused (camera 0, malformed ids)."""
    from ppise.data.datasets import MSMT17, Market1501
    from ppise.data.market_names import parse_name
    from ppise.deploy.images import list_images, with_market_ids

    assert parse_name("0002_c3s1_000451_03.jpg", camera_digits=1) == (2, 2)
    assert parse_name("/x/0007_c11_0030.jpg") == (7, 10)
    assert parse_name("0007_c12s1_000001_00.jpg", camera_digits=1) == (7, 0)  # Market: one camera digit
    assert parse_name("-1_c1s1_000001_00.jpg") == (-1, 0)
    for bad in ("person.png", "0002_c0s1_000451_03.jpg", "--3_c1s1.jpg", "1-2_c1.jpg"):
        with pytest.raises(ValueError):
            parse_name(bad)
    train = tmp_path / MARKET / "bounding_box_train"
    names = ["0002_c3s1_000451_03.jpg", "0007_c6s2_000100_01.jpg", "-1_c1s1_000001_00.jpg"]
    for i, name in enumerate(names):
        _jpg(train, name, i)
    ds = Market1501(str(tmp_path), "bounding_box_train")
    deployed = with_market_ids(list_images(str(train)), "IndexProcess.image_root")
    assert ds.labels.tolist() == deployed.pids.tolist() == [2, 7]
    assert ds.cameras.tolist() == deployed.cams.tolist() == [2, 5]
    msmt = tmp_path / "msmt17" / "MSMT17_V1" / "query"
    _jpg(msmt, "0007_c11_0030.jpg")
    _jpg(msmt, "0008_c3_0031.jpg")
    assert MSMT17(str(tmp_path), "query").cameras.tolist() == \
        with_market_ids(list_images(str(msmt)), "k").cams.tolist() == [10, 2]
    odd = tmp_path / "odd"
    _jpg(odd, "1-2_c1s1_000001_00.jpg")  # deploy used to read pid int('1-2') -> ValueError traceback
    with pytest.raises(DataError, match="Market-1501 naming"):
        with_market_ids(list_images(str(odd)), "IndexProcess.image_root")


def test_deploy_config_uses_the_training_config_engine(tmp_path):
    """One override/validation engine: the same mistake gets the same words in both configs."""
    from ppise import config as train_config
    from ppise.deploy import config as deploy_config

    assert not hasattr(deploy_config, "_set")  # the deploy config's own -o engine is gone
    deploy_yaml = tmp_path / "d.yaml"
    deploy_yaml.write_text("RecPreProcess:\n  transform_ops: [{ResizeImage: {size: [32, 64]}}]\n")
    train = {"Global": {}, "Arch": {"ops": [{"ResizeImage": {"size": [32, 64]}}]}}
    messages = []
    for apply in (lambda: train_config.apply_override(train, "Arch.ops.3.ResizeImage=1"),
                  lambda: deploy_config.load_deploy_config(str(deploy_yaml), ["RecPreProcess.transform_ops.3.ResizeImage=1"])):
        with pytest.raises(ConfigError) as err:
            apply()
        messages.append(str(err.value).split(": ", 1)[1])
    assert messages[0] == messages[1] == "index 3 is out of range (list has 1 items)"
    with pytest.raises(ConfigError, match=r"unknown IndexProcess key 'retrun_k' \(did you mean 'return_k'\?\)"):
        deploy_config.load_deploy_config(str(deploy_yaml), ["IndexProcess.retrun_k=5"])
    warned = []
    deploy_yaml.write_text("Global:\n  batch_sise: 4\n")
    cfg = deploy_config.load_deploy_config(str(deploy_yaml), ["Global.infer_imgs=0001"], warn=warned.append)
    assert cfg["Global"]["infer_imgs"] == "0001" and cfg["Global"]["batch_size"] == 32
    assert warned == ["Global.batch_sise is not used by ppise (did you mean 'batch_size'?)"]


# ---------------------------------------------------------------- item 8: the search picture

def test_search_picture_is_split_has_legend_names_and_same_camera_colour(tmp_path):
    from ppise.deploy import visualize as vis

    img = _jpg(tmp_path, "0001_c1s1_000001_00.jpg")
    hits = [{"rank": 1, "score": 0.9, "path": img, "pid": 1, "cam": 0, "match": True},   # same camera
            {"rank": 2, "score": 0.8, "path": img, "pid": 1, "cam": 3, "match": True},   # other camera
            {"rank": 3, "score": 0.7, "path": img, "pid": 2, "cam": 3, "match": False}]
    results = [{"query": img, "pid": 1, "cam": 0, "hits": hits} for _ in range(5)]
    assert [vis.hit_colour(results[0], h) for h in hits] == [vis.ORANGE, vis.GREEN, vis.RED]
    out = str(tmp_path / "hits.png")
    files = vis.draw_results(results, out, k=3, max_rows=2)
    assert [f["path"] for f in files] == [str(tmp_path / f"hits_00{i}.png") for i in (1, 2, 3)]
    assert [f["queries"] for f in files] == [2, 2, 1] and not os.path.exists(out)
    first = cv2.imread(files[0]["path"])
    assert first.shape[:2] == vis.canvas_shape(2, 3) and first.shape[0] < 600
    legend = first[:vis.LEGEND]
    for colour in (vis.BLUE, vis.GREEN, vis.ORANGE, vis.RED, vis.GREY):
        assert (legend == colour).all(axis=2).sum() >= 100, colour  # a swatch of every key
    name_band = first[vis.LEGEND + vis.PAD:vis.LEGEND + vis.PAD + vis.CAPTION]
    assert (name_band < 128).any()  # the query's file name is written above its row
    assert (first == vis.ORANGE).all(axis=2).sum() > 2 * (first[:vis.LEGEND] == vis.ORANGE).all(axis=2).sum()
    one = vis.draw_results(results[:1], out, k=3)
    assert [f["path"] for f in one] == [out]


# ---------------------------------------------------------------- item 5: the demo invents no data

def _demo_cfg(root, out, extra=()):
    from ppise.config import get_config

    demo = os.path.join(os.path.dirname(__file__), "..", "configs", "ise_demo.yaml")
    ov = [f"DataLoader.{s}.dataset.image_root={root}" for s in ("Train", "Eval.Query", "Eval.Gallery")]
    return get_config(demo, ov + [f"Global.output_dir={out}", "Global.synthetic_dataset.ids=6", *extra])


def test_demo_generates_only_at_its_own_location(tmp_path):
    import importlib.util

    from ppise.data import build_dataset
    from ppise.data.demo_data import DEMO_ROOT, ensure_dataset, is_demo_run

    assert importlib.util.find_spec("ppise.data.prepare") is None  # renamed for what it holds
    assert DEMO_ROOT == "./dataset/synthetic_demo"
    typo = str(tmp_path / "synthetc_demo")
    cfg = _demo_cfg(typo, str(tmp_path / "out"))
    ensure_dataset(cfg)
    assert not os.path.exists(typo) and not is_demo_run(cfg)
    with pytest.raises(DataError, match="dataset folder not found: .*synthetc_demo"):
        build_dataset(cfg["DataLoader"]["Train"], "DataLoader.Train")
    asked = str(tmp_path / "elsewhere")  # asked explicitly: Global.synthetic_dataset.root
    cfg = _demo_cfg(asked, str(tmp_path / "out"), [f"Global.synthetic_dataset.root={asked}"])
    ensure_dataset(cfg)
    assert os.path.isdir(os.path.join(asked, MARKET, "bounding_box_train")) and is_demo_run(cfg)


def test_demo_run_starts_over_but_real_runs_stay_protected(tmp_path, capsys):
    from ppise.engine.builder import prepare_output_dir
    from ppise.errors import TrainingError

    out = tmp_path / "out"
    out.mkdir()
    data = str(tmp_path / "data")
    demo = _demo_cfg(data, str(out), [f"Global.synthetic_dataset.root={data}"])
    (out / "train_log.jsonl").write_text('{"epoch": 1}\n')
    prepare_output_dir(demo)  # the README's first command run again
    assert not (out / "train_log.jsonl").exists()
    (out / "train_log.jsonl").write_text('{"epoch": 1}\n')
    real = _demo_cfg(data, str(out), ["Global.synthetic_dataset=null"])
    with pytest.raises(TrainingError, match="already holds a run"):
        prepare_output_dir(real)
    elsewhere = _demo_cfg(str(tmp_path / "market"), str(out))  # demo config on other data
    with pytest.raises(TrainingError, match="already holds a run"):
        prepare_output_dir(elsewhere)
    assert (out / "train_log.jsonl").exists()


# ---------------------------------------------------------------- item 1: kill -9 leaves no workers

def _shm_files(pids):
    return sorted(n for n in os.listdir("/dev/shm") if any(n.startswith(f"paddle_{p}_") for p in pids))


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or not hasattr(os, "fork"), reason="Linux shared memory")
def test_kill_9_of_the_trainer_leaves_no_worker_and_no_shm_file(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from tiny import DEMO, ROOT, make_data, tiny_overrides

    data = make_data(str(tmp_path / "data"))
    args = [sys.executable, os.path.join(ROOT, "tools/train.py"), "-c", DEMO]
    for o in tiny_overrides(data, str(tmp_path / "out"), epochs=50, iters=50, workers=2):
        args += ["-o", o]
    log = open(tmp_path / "console.txt", "w")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))
    workers = []
    try:
        trainer, deadline = psutil.Process(proc.pid), time.time() + 240
        while "images/s" not in (tmp_path / "console.txt").read_text():  # mid-epoch, training batches flow
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "console.txt").read_text()[-2000:]
            time.sleep(0.05)
        workers = trainer.children(recursive=True)
        assert len(workers) >= 2, workers
        time.sleep(0.5)
        pids = [w.pid for w in workers]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"workers outlived the trainer: {alive}"
        assert _shm_files(pids) == []
    finally:  # orphans are no longer our children: kill them by the pids we saw
        for w in workers + psutil.Process().children(recursive=True):
            try:
                w.kill()
            except psutil.NoSuchProcess:
                pass
        log.close()


def test_next_loader_removes_shared_memory_of_dead_processes(tmp_path):
    from ppise.data import loader

    dead = 2 ** 22 + 12345  # above the default pid_max of 4194304: never alive
    mine = os.path.join(loader.SHM_DIR, f"paddle_{dead}_1_123")
    live = os.path.join(loader.SHM_DIR, f"paddle_{os.getpid()}_1_123")
    for path in (mine, live):
        open(path, "wb").close()
    try:
        assert loader.remove_stale_shm_files() >= 1
        assert not os.path.exists(mine) and os.path.exists(live)
    finally:
        for path in (mine, live):
            if os.path.exists(path):
                os.remove(path)


# ---------------------------------------------------------------- item 7: paths and units in the docs

def test_docs_point_at_the_demo_data_and_name_the_metric_units():
    import re

    import yaml

    from ppise.data.demo_data import DEMO_ROOT

    root = os.path.join(os.path.dirname(__file__), "..")
    with open(os.path.join(root, "deploy", "configs", "inference_rec.yaml")) as f:
        deploy = yaml.safe_load(f)
    for path in (deploy["Global"]["infer_imgs"], deploy["IndexProcess"]["image_root"]):
        assert path.startswith(DEMO_ROOT + "/"), path
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert not re.search(r"\./dataset/synthetic(?![_\w])", readme)  # only the demo's ./dataset/synthetic_demo
    assert "fractions in [0, 1]" in readme and "console prints percent" in readme


# ---------------------------------------------------------------- item 9: noise ppise triggers itself

def test_paddle_noise_is_filtered_and_lines_are_said_once(tmp_path):
    import logging
    import subprocess
    import sys
    from ppise.data.datasets import Market1501
    from ppise.utils.logger import logger

    script = ("import warnings, ppise, paddle\n"
              "bn = paddle.nn.BatchNorm1D(4)\nbn.train()\n"
              "for _ in range(3):  # catch_warnings() resets the once-only registry: it showed every epoch\n"
              "    with warnings.catch_warnings():\n        pass\n    bn(paddle.ones([2, 4]))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTHONWARNINGS")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no BatchNorm, no ccache warning

    for i in range(3):
        _jpg(tmp_path / MARKET / "query", f"000{i + 1}_c1s1_00000{i}_00.jpg", i)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    try:
        for _ in range(2):
            Market1501(str(tmp_path), "query")
    finally:
        logger.removeHandler(handler)
    assert len([ln for ln in lines if ln.startswith("Market1501 query: 3 ids")]) == 1

    root = os.path.join(os.path.dirname(__file__), "..")
    proc = subprocess.run([sys.executable, "deploy/python/predict_rec.py", "-o", "Global.infer_imgs=README.md"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]], proc.stderr  # one line
    assert proc.stderr.startswith("ppise: error: README.md (from Global.infer_imgs) is neither an image")
