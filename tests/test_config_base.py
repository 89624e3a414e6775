"""``_BASE_`` inheritance in config files."""
import os

import pytest

from ppise.config import get_config, load_yaml
from ppise.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def test_base_merges_mappings_replaces_lists_and_scalars_keeps_null(tmp_path):
    _write(tmp_path / "a.yaml", "Global: {epochs: 5, seed: 1, tags: [x, y], device: cpu}\n"
                                "Arch: {Neck: {name: BNNeck, num_features: 8}}\n")
    _write(tmp_path / "sub" / "b.yaml", "_BASE_: ../a.yaml\nGlobal: {epochs: 7, tags: [z]}\nArch: {Neck: {num_features: 16}}\n")
    c = _write(tmp_path / "sub" / "c.yaml", "_BASE_: b.yaml\nGlobal: {device: null}\nLoss: {Train: [{CELoss: {}}]}\n")
    cfg = load_yaml(c)
    assert cfg == {"Global": {"epochs": 7, "seed": 1, "tags": ["z"], "device": None},
                   "Arch": {"Neck": {"name": "BNNeck", "num_features": 16}},
                   "Loss": {"Train": [{"CELoss": {}}]}}
    assert "_BASE_" not in load_yaml(str(tmp_path / "sub" / "b.yaml"))


def test_base_errors_name_the_file(tmp_path):
    missing = _write(tmp_path / "m.yaml", "_BASE_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: _BASE_ 'nowhere.yaml' not found"):
        load_yaml(missing)
    _write(tmp_path / "x.yaml", "_BASE_: y.yaml\n")
    _write(tmp_path / "y.yaml", "_BASE_: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_yaml(str(tmp_path / "x.yaml"))
    with pytest.raises(ConfigError, match="_BASE_ must be"):
        load_yaml(_write(tmp_path / "l.yaml", "_BASE_: [a.yaml]\n"))


@pytest.mark.parametrize("child,base", [("ise_msmt17.yaml", "ise_market.yaml"), ("cc_market.yaml", "ise_market.yaml"),
                                        ("cc_demo.yaml", "ise_demo.yaml")])
def test_shipped_variants_inherit_and_override_applies_after_merge(child, base):
    path = os.path.join(ROOT, "configs", child)
    with open(path, encoding="utf-8") as f:
        assert f"_BASE_: {base}" in f.read()
    cfg = get_config(path, ["Global.epochs=3"])
    assert cfg["Global"]["epochs"] == 3 and "_BASE_" not in cfg
