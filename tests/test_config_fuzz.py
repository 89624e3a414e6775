"""Property-based fuzzing of the config loader and the tools' command line.

Every malformed YAML file, ``-o`` override or argv must end in a ConfigError whose message
names what is wrong (file, key or override), or in a valid config that can be saved again;
never in another exception from deep inside (TypeError, AttributeError, ValueError...).
"""
from __future__ import annotations

import os
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppise.config import GLOBAL_SCHEMA, SECTIONS, apply_override, dump, get, get_config, parse_override
from ppise.errors import ConfigError
from ppise.utils.cli import config_parser

from tiny import DEMO

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Values that have broken YAML-based loaders before: impossible dates, bad explicit tags,
# recursive aliases, deep nesting, unterminated quotes, python tags, exotic floats.
TRICKY_VALUES = [
    "2001-02-30", "2020-13-01 25:61:00", "!!float abc", "!!int 1.5", "!!binary %%%", "!!timestamp x",
    "&a [*a]", "&a {b: *a}", "[" * 60 + "]" * 60, "[" * 2000, "{a: [1, {b: }", "'unterminated", '"\\xZZ"',
    "!!python/object/apply:os.system ['true']", "!!set {a, b}", "!!omap [a: 1]", "1e30", "-1E-4", ".nan",
    ".inf", "0x1F", "0o17", "1_000", "~", "null", "True", "yes", "", " ", "a: b", "- x", "? a", "*undefined",
    "%YAML 1.1", "---", "...", "@x", "`", "\t", "\x00", "\ud7ff", "[1, 2, 3]", "{}", "[]", "3", "-1", "0.5",
]
KEY_PARTS = list(SECTIONS) + list(GLOBAL_SCHEMA) + [
    "Train", "Eval", "Query", "dataset", "sampler", "batch_size", "0", "1", "-1", "99", "name", "lr",
    "learning_rate", "Backbone", "eps", "k1", "min_samples", "", " ", "²", "٣", "1_0", "x y", "é",
]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(TRICKY_VALUES))
trees = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEY_PARTS), st.text(max_size=6), st.integers(-3, 3)), kids, max_size=4)),
    max_leaves=20)
override_keys = st.lists(st.sampled_from(KEY_PARTS), min_size=1, max_size=5).map(".".join)
override_values = st.one_of(st.sampled_from(TRICKY_VALUES), st.text(max_size=20),
                            trees.map(lambda t: yaml.safe_dump(t, default_flow_style=True).strip()))
overrides = st.one_of(
    st.tuples(override_keys, override_values).map("=".join),
    st.text(max_size=30),
    st.tuples(st.sampled_from(KEY_PARTS), st.text(alphabet=string.printable, max_size=20)).map(lambda kv: "=".join(kv)),
)
config_files = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(SECTIONS), st.text(max_size=8)), trees, max_size=5).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.text(max_size=200),
    st.sampled_from(TRICKY_VALUES),
    st.lists(st.sampled_from(TRICKY_VALUES + ["Global:", "  epochs: 2", "Cluster:", "  eps: x", "Global: [1]",
                                              "Arch: 3", "DataLoader:\n  Train: 5", "Global:\n  image_shape: 7"]),
             max_size=6).map("\n".join),
)


def _explains(err: ConfigError, hints) -> bool:
    msg = str(err)
    return bool(msg.strip()) and "Traceback" not in msg and any(h and h in msg for h in hints)


def _check_outcome(call, hints):
    """``call()`` must return a savable config or raise a ConfigError naming one of ``hints``."""
    try:
        cfg = call()
    except ConfigError as err:
        assert _explains(err, hints), f"unclear message: {err!r} (expected one of {hints})"
        return None
    assert isinstance(cfg, dict) and isinstance(cfg["Global"], dict)
    assert set(GLOBAL_SCHEMA) <= set(cfg["Global"])
    dump(cfg)  # builder writes the resolved config next to the run: it must serialise
    return cfg


HINTS = ("override", "config", "Global", "Cluster", "section", *SECTIONS)


@FUZZ
@given(text=config_files, extra=st.lists(overrides, max_size=3))
def test_random_yaml_files_and_overrides(tmp_path, text, extra):
    path = os.path.join(str(tmp_path), "fuzz.yaml")
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    _check_outcome(lambda: get_config(path, extra), HINTS + (path,))


@FUZZ
@given(extra=st.lists(overrides, min_size=1, max_size=4))
def test_random_overrides_on_the_demo_config(extra):
    cfg = _check_outcome(lambda: get_config(DEMO, extra), HINTS + tuple(extra))
    parts, value = parse_override(extra[-1]) if cfg is not None else ([], None)
    moved = parts[:2] == ["Arch", "Head"] or "use_support" in parts  # the old ISE form, converted by validate
    if len(parts) > 1 and not moved:  # an accepted override really landed where it says (whole sections get defaults)
        landed = get(cfg, ".".join(parts))
        typed_as_text = isinstance(landed, str) and isinstance(value, (dict, list))  # Global paths stay literal
        assert typed_as_text or landed is value or landed == value or (value != value and landed != landed)


@FUZZ
@given(text=st.one_of(st.text(max_size=40), overrides))
def test_parse_override_types_or_explains(text):
    try:
        parts, _ = parse_override(text)
    except ConfigError as err:
        assert _explains(err, ("override",)), err
        return
    assert parts and all(p for p in parts)


@FUZZ
@given(tree=trees, extra=st.lists(overrides, max_size=2))
def test_random_nested_structures_in_memory(tree, extra):
    """Structures that never went through a file (e.g. built by a script) and then overridden."""
    cfg = {"Global": {"epochs": 1}, "Arch": tree, "Cluster": {"eps": tree} if isinstance(tree, (int, float)) else {}}

    def run():
        for text in extra:
            apply_override(cfg, text)
        from ppise.config import validate
        return validate(cfg)

    _check_outcome(run, HINTS + tuple(extra))


@FUZZ
@given(argv=st.lists(st.one_of(st.sampled_from(["-c", "-o", "--config", "--override", "--", "-x", DEMO]), overrides,
                               st.text(max_size=10)), max_size=6))
def test_cli_argv_ends_in_usage_error_config_error_or_config(argv):
    """Like tools/*.py: argparse exits 2 on bad usage; parsed args end in ConfigError or a config."""
    parser = config_parser("fuzz")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        assert stop.code == 2 or (stop.code == 0 and any(a in ("-h", "--help") for a in argv))
        return
    _check_outcome(lambda: get_config(args.config, args.override), HINTS + (str(args.config),) + tuple(args.override))


@pytest.mark.parametrize("text, expected", [
    ("Optimizer.lr.learning_rate=1e30", 1e30),   # YAML 1.1 would leave these as strings
    ("Optimizer.lr.learning_rate=3.5e-4", 3.5e-4),
    ("Optimizer.lr.learning_rate=-1E+2", -100.0),
    ("Global.seed=12", 12),
    ("Global.save_inference_dir=2001-02-30", "2001-02-30"),  # an impossible date stays the text typed
])
def test_override_values_are_typed_as_users_expect(text, expected):
    _, value = parse_override(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text, needle", [
    ("Global: [1, 2]", "Global must be a mapping"),        # was AttributeError: 'list' has no 'items'
    ("Global:\n  epochs: 2001-02-30", "Global.epochs"),  # was ValueError: day is out of range for month
    ("lr: !!float abc", "fuzz.yaml"),                     # was ValueError from PyYAML's constructor
    ("x: !!timestamp x", "fuzz.yaml"),                    # was AttributeError: 'NoneType' ... 'groupdict'
    ("[" * 3000, "fuzz.yaml"),                            # was RecursionError
    ("Cluster:\n  eps: -1", "Cluster.eps"),              # was accepted, failed at the first clustering
    ("Cluster:\n  min_samples: 0", "Cluster.min_samples"),
], ids=["global-list", "impossible-date", "bad-float-tag", "bad-timestamp-tag", "deep-nesting", "eps", "min-samples"])
def test_holes_found_by_fuzzing_are_closed(tmp_path, text, needle):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        get_config(str(path))
