"""Config loading, -o overrides and their error messages."""
import os

import pytest
import yaml

from ppise.config import apply_override, get, get_config, parse_override, validate
from ppise.registry import split_spec as component
from ppise.errors import ConfigError
from ppise.registry import Registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL = os.path.join(ROOT, "..", "shared", "paddleclas", "ResNet50_UReID_infer.yaml")


def write(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_override_types_and_list_index(tmp_path):
    path = write(tmp_path, {"Global": {"epochs": 3}, "Loss": {"Train": [{"ClusterMemoryLoss": {"weight": 1.0}}]}})
    cfg = get_config(path, ["Global.epochs=7", "Loss.Train.0.ClusterMemoryLoss.weight=0.5", "Global.image_shape=[3,128,64]",
                            "Global.pretrained_model=null", "Global.output_dir=/tmp/a b: c"])
    assert cfg["Global"]["epochs"] == 7 and isinstance(cfg["Global"]["epochs"], int)
    assert cfg["Loss"]["Train"][0]["ClusterMemoryLoss"]["weight"] == 0.5
    assert cfg["Global"]["image_shape"] == [3, 128, 64]
    assert cfg["Global"]["pretrained_model"] is None
    assert cfg["Global"]["output_dir"] == "/tmp/a b: c"


def test_override_never_evaluates_code(tmp_path):
    path = write(tmp_path, {"Global": {}})
    cfg = get_config(path, ["Global.output_dir=__import__('os').system('false')"])
    assert cfg["Global"]["output_dir"] == "__import__('os').system('false')"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("Globl.epochs=3", "unknown section 'Globl' (did you mean 'Global'?)"),
        ("Global.epoch=3", "unknown Global key 'epoch' (did you mean 'epochs'?)"),
        ("Global.epochs=three", "Global.epochs must be int"),
        ("Global.device=tpu", "Global.device must be one of cpu, gpu"),
        ("Loss.Train.5.X.weight=1", "index 5 is out of range"),
        ("Loss.Train.a.X=1", "'a' must be a list index"),
        ("Arch.Backbone.nme.x=1", "key 'Arch.Backbone.nme' does not exist"),
        ("Global.epochs", "must look like Section.key=value"),
        ("Global..epochs=1", "empty key name"),
        ("Global.epochs=0", "Global.epochs must be >= 1"),
        ("Global.eval_during_train=3", "Global.eval_during_train must be bool"),
    ],
)
def test_bad_overrides_name_the_key(tmp_path, override, fragment):
    path = write(tmp_path, {"Global": {"epochs": 1}, "Arch": {"Backbone": {"name": "x"}}, "Loss": {"Train": [{"X": {}}]}})
    with pytest.raises(ConfigError) as err:
        get_config(path, [override])
    assert fragment in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        get_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("Global: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        get_config(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        get_config(str(lst))


def test_unknown_section_in_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown config section 'Optimiser' \\(did you mean 'Optimizer'\\?\\)"):
        get_config(write(tmp_path, {"Optimiser": {"name": "Adam"}}))


def test_defaults_filled_and_get_reports_missing_path(tmp_path):
    cfg = get_config(write(tmp_path, {"Global": {}, "Cluster": {"eps": 0.5}}))
    assert cfg["Global"]["eval_protocol"] == "market" and cfg["Global"]["device"] == "cpu"
    assert cfg["Cluster"]["k1"] == 30 and cfg["Cluster"]["eps"] == 0.5
    with pytest.raises(ConfigError, match="missing required config key DataLoader.Train.dataset"):
        get(cfg, "DataLoader.Train.dataset")
    assert get(cfg, "DataLoader.Train.dataset", None) is None


def test_cluster_types_checked(tmp_path):
    with pytest.raises(ConfigError, match="Cluster.k1 must be int"):
        get_config(write(tmp_path, {"Cluster": {"k1": "thirty"}}))


def test_official_paddleclas_config_loads_with_warnings_only():
    if not os.path.isfile(OFFICIAL):
        pytest.skip(f"official PaddleClas config not beside the checkout: {OFFICIAL}")
    warnings = []
    cfg = get_config(OFFICIAL, ["Global.device=cpu"], warn=warnings.append)
    assert cfg["Arch"]["Backbone"]["name"] == "ResNet50_last_stage_stride1"
    assert cfg["Global"]["image_shape"] == [3, 128, 256]


def test_component_forms():
    assert component({"name": "A", "x": 1}, "p") == ("A", {"x": 1})
    assert component({"A": {"x": 1}}, "p") == ("A", {"x": 1})
    assert component({"A": None}, "p") == ("A", {})
    with pytest.raises(ConfigError, match="Loss.Train.0"):
        component({"A": 1, "B": 2}, "Loss.Train.0")


def test_registry_lists_names_on_unknown():
    reg = Registry("widget")

    @reg.register
    class Alpha:
        def __init__(self, size: int = 1):
            self.size = size

    reg.register(Alpha, name="Beta")
    assert reg.build("Beta", size=3).size == 3
    assert reg.build({"name": "Beta", "size": 4}, where="Arch.Neck").size == 4  # both spec forms
    assert reg.build({"Beta": {"size": 5}}, where="Loss.Train[0]").size == 5
    with pytest.raises(ConfigError, match="Arch.Neck.name: unknown widget 'Gamma'; registered: Alpha, Beta"):
        reg.get("Gamma", where="Arch.Neck.name")
    with pytest.raises(ConfigError, match="did you mean 'Alpha'"):
        reg.get("Alpah", where="Arch.Neck.name")
    with pytest.raises(ConfigError, match=r"Arch.Neck.colour: unknown key; Arch.Neck accepts: size"):
        reg.build({"name": "Alpha", "colour": 1}, where="Arch.Neck")
    with pytest.raises(ConfigError, match=r"Arch.Neck.size must be int, got 'big'"):
        reg.build({"name": "Alpha", "size": "big"}, where="Arch.Neck")


def test_parse_override_plain_string_fallback():
    assert parse_override("Global.output_dir=a: b: c") == (["Global", "output_dir"], "a: b: c")


def test_validate_rejects_bad_image_shape():
    with pytest.raises(ConfigError, match="Global.image_shape must be \\[C, H, W\\]"):
        validate({"Global": {"image_shape": [3, 256]}})


def test_apply_override_creates_missing_section():
    cfg = {}
    apply_override(cfg, "Cluster.eps=0.3")
    assert cfg == {"Cluster": {"eps": 0.3}}


# ------------------------------------------------------------------ one schema: typos and types (issue 16 items 2-3)
DEMO = os.path.join(ROOT, "configs", "ise_demo.yaml")


@pytest.mark.parametrize("override, fragment", [
    ("Cluster.epz=0.5", "unknown Cluster key 'epz' (did you mean 'eps'?)"),
    ("Optimizer.lr.learning_rte=0.1", "Optimizer.lr.learning_rte: unknown key (did you mean 'learning_rate'?)"),
    ("DataLoader.Train.sampler.batch_sise=32", "DataLoader.Train.sampler.batch_sise: unknown key (did you mean 'batch_size'?)"),
    ("Loss.Train.0.ClusterMemoryLoss.temprature=1", "Loss.Train[0].ClusterMemoryLoss.temprature: unknown key (did you mean 'temperature'?)"),
    ("Arch.Neck.num_feature=3", "Arch.Neck.num_feature: unknown key (did you mean 'num_features'?)"),
    ("DataLoader.Train.loader.num_worker=1", "unknown key 'num_worker' (did you mean 'num_workers'?) (at DataLoader.Train.loader.num_worker)"),
    ("DataLoader.Train.sampler.batch_size=abc", "DataLoader.Train.sampler.batch_size must be int, got 'abc'"),
    ("DataLoader.Train.sampler.batch_size=[1,2]", "DataLoader.Train.sampler.batch_size must be int, got [1, 2]"),
    ("DataLoader.Train.sampler.num_instances=abc", "DataLoader.Train.sampler.num_instances must be int, got 'abc'"),
    ("Cluster.eps=1.5", "Cluster.eps must be in (0, 1)"),
    ("Cluster.gemm=fast", "Cluster.gemm must be one of auto, numpy"),
    ("AMP.level=O3", "AMP.level must be one of O1, O2"),
    ("Global.to_static=maybe", "Global.to_static must be bool"),
])
def test_every_unknown_key_and_bad_type_fails_before_data(override, fragment):
    from ppise.config import check_components

    with pytest.raises(ConfigError) as err:
        check_components(get_config(DEMO, [override], warn=lambda m: None))
    assert fragment in str(err.value)


def test_yaml_typo_in_global_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown Global key 'epochz' \(did you mean 'epochs'\?\) \(at Global.epochz\)"):
        get_config(write(tmp_path, {"Global": {"epochz": 15}}))


def test_new_section_keys_have_defaults():
    cfg = get_config(DEMO, ["Global.device=gpu:1"], warn=lambda m: None)
    assert cfg["Global"]["device"] == "gpu:1" and cfg["Global"]["to_static"] is False
    assert cfg["Cluster"]["gemm"] == "auto"
    assert "AMP" not in cfg  # no AMP section, no AMP (PaddleClas)
    amp = get_config(DEMO, ["AMP.level=O1"], warn=lambda m: None)["AMP"]  # present: on, the rest as PaddleClas
    assert amp == {"use_amp": True, "scale_loss": 1.0, "use_dynamic_loss_scaling": False, "level": "O1", "dtype": "float16",
                   "use_promote": False, "use_fp16_test": False}


def test_official_paddleclas_config_passes_the_component_checks():
    from ppise.config import check_components

    if not os.path.isfile(OFFICIAL):
        pytest.skip(f"official PaddleClas config not beside the checkout: {OFFICIAL}")
    warnings = []
    cfg = get_config(OFFICIAL, ["Global.device=cpu"], warn=warnings.append)
    check_components(cfg, warn=warnings.append)  # CELoss / SupConLoss are valid losses; only a cluster run refuses them
    assert all("PaddleClas key" in w for w in warnings)
    with pytest.raises(ConfigError, match="unknown Global key 'epochz'"):
        get_config(OFFICIAL, ["Global.device=cpu", "Global.epochz=3"])
