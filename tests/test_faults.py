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
