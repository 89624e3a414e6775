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
