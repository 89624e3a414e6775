"""Load ``.pdparams`` weights (path with or without the suffix, as in PaddleClas) with one
report naming every mismatch at once; convert torchvision / PaddleClas ResNet-50 weights."""
from __future__ import annotations

import os
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn as nn

from ppise.errors import ConfigError, TrainingError
from ppise.utils.fileio import atomic_save
from ppise.utils.logger import logger

_SHOW = 5  # how many keys of each kind a message lists


def resolve_weights_path(path: str, config_key: str = "Global.pretrained_model") -> str:
    """``path`` or ``path + '.pdparams'``, whichever is a file; else a ConfigError naming both."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{config_key} must be a path to a .pdparams file, got {path!r}")
    candidates = [path] if path.endswith(".pdparams") else [path + ".pdparams", path]
    for cand in candidates:
        if os.path.isfile(cand):
            return cand
    raise ConfigError(f"weights file not found: {candidates[0]!r} (from {config_key}: {path!r}); "
                      f"give a .pdparams path, with or without the suffix")


def _shape(value: Any) -> Tuple[int, ...]:
    return tuple(int(d) for d in (value.shape if hasattr(value, "shape") else np.shape(value)))


def _listing(title: str, items: List[str]) -> str:
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"{len(items)} {title}: {', '.join(items[:_SHOW])}{more}"


def load_pretrained(model: nn.Layer, path: str, strict: bool = True, skip_prefixes: Sequence[str] = (),
                    key_prefix: str = "", config_key: str = "Global.pretrained_model") -> Dict[str, Any]:
    """Load ``path`` into ``model``; return ``{path, loaded, missing, unexpected, mismatched}``.

    ``skip_prefixes``: keys (file and model) ignored, e.g. ``("head.",)`` for a fresh classifier;
    ``key_prefix``: only the file's keys with it, stripped (``"backbone."``: a RecModel file into
    a backbone). Strict: any mismatch is a ConfigError listing all; else the rest is logged.
    """
    file_path = resolve_weights_path(path, config_key)
    try:
        state = paddle.load(file_path)
    except Exception as err:  # corrupt or not a paddle file
        raise ConfigError(f"cannot read weights file {file_path!r} (from {config_key}): {err}") from err
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {file_path!r} (from {config_key}) holds a {type(state).__name__}, "
                          "not a state dict")
    skip = tuple(skip_prefixes)
    if key_prefix:
        state = {k[len(key_prefix):]: v for k, v in state.items() if k.startswith(key_prefix)}
    state = {k: v for k, v in state.items() if not (skip and k.startswith(skip))}
    own = {k: v for k, v in model.state_dict().items() if not (skip and k.startswith(skip))}

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, _shape(state[k]), _shape(own[k])) for k in own if k in state and _shape(state[k]) != _shape(own[k])]
    report: Dict[str, Any] = {"path": file_path, "missing": missing, "unexpected": unexpected,
                              "mismatched": mismatched}
    shapes = [f"{k} {list(a)} vs {list(b)}" for k, a, b in mismatched]
    problems = [_listing(title, items) for title, items in [
        ("missing key(s) (in the model, not in the file)", missing),
        ("unexpected key(s) (in the file, not in the model)", unexpected),
        ("shape mismatch(es) (file vs model)", shapes)] if items]
    if strict and problems:
        raise ConfigError(f"weights {file_path!r} (from {config_key}) do not fit the model: " + "; ".join(problems)
                          + ". Check that the config's Arch matches the one the weights were trained with")
    bad = {k for k, _, _ in mismatched}
    to_load = {k: v for k, v in state.items() if k in own and k not in bad}
    if not to_load:
        raise ConfigError(f"weights {file_path!r} (from {config_key}) share no key of matching shape with the model; "
                          + "; ".join(problems))
    with warnings.catch_warnings():  # Paddle warns per skipped key; the report above says it once
        warnings.simplefilter("ignore", UserWarning)
        model.set_state_dict(to_load)
    report["loaded"] = len(to_load)
    if problems:
        logger.warning("loaded %d tensors from %s (%s); %s", len(to_load), file_path, config_key, "; ".join(problems))
    else:
        logger.info("loaded %d tensors from %s (%s)", len(to_load), file_path, config_key)
    return report


def save_state_dict_atomic(state: Dict[str, Any], path: str) -> None:
    """``atomic_save`` into a created folder: a crash never leaves a half-written file."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_save(state, path)
    except OSError as err:
        raise TrainingError(f"cannot write {path!r}: {err}") from err


# ---------------------------------------------------------------------------------------------
# ImageNet ResNet-50 weights from torchvision (or PaddleClas) for ResNet50_last_stage_stride1

_TV_STAGES = (3, 4, 6, 3)  # torchvision layer1..layer4 bottlenecks of ResNet-50
_TV_BN = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}
_TV_DROPPED = ("fc.weight", "fc.bias")  # the ImageNet classifier: not part of a re-ID backbone
_TV_BLOCK = re.compile(r"layer([1-4])\.(\d+)\.(?:(conv|bn)([1-3])|downsample\.([01]))")


def torchvision_to_ppise_key(key: str) -> Optional[str]:
    """ppise / PaddleClas ``ResNet50_last_stage_stride1`` key of a torchvision ResNet-50 key:
    ``conv1``/``bn1`` -> ``stem.0.conv``/``.bn``, ``layer{s}.{b}.conv{j}``/``bn{j}`` ->
    ``blocks.{n}.conv{j-1}.conv``/``.bn`` (n counts bottlenecks over stages), ``downsample.0``
    /``.1`` -> ``short.conv``/``.bn``. None for ``num_batches_tracked`` and ``fc``; else KeyError.
    """
    module, _, leaf = key.rpartition(".")
    if key in _TV_DROPPED or leaf == "num_batches_tracked":
        return None
    m = _TV_BLOCK.fullmatch(module)
    if module in ("conv1", "bn1"):
        new, kind = "stem.0", module[:-1]
    elif m and int(m[2]) < _TV_STAGES[int(m[1]) - 1] and (m[5] is None or int(m[2]) == 0):
        n = sum(_TV_STAGES[:int(m[1]) - 1]) + int(m[2])
        if m[5] is None:  # conv{j} / bn{j}
            new, kind = f"blocks.{n}.conv{int(m[4]) - 1}", m[3]
        else:  # downsample.0 (conv) / .1 (bn)
            new, kind = f"blocks.{n}.short", ("conv", "bn")[int(m[5])]
    else:
        raise KeyError(key)
    if kind == "conv" and leaf == "weight":
        return f"{new}.conv.weight"
    if kind == "bn" and leaf in _TV_BN:
        return f"{new}.bn.{_TV_BN[leaf]}"
    raise KeyError(key)


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
    """numpy arrays of a ``.safetensors`` (no torch needed), ``.pth``/``.pt`` (needs torch) or ``.pdparams``."""
    if not os.path.isfile(path):
        raise ConfigError(f"weights file not found: {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ConfigError("reading .safetensors needs the safetensors package: pip install safetensors") from None
        try:
            return dict(load_file(path))
        except Exception as err:
            raise ConfigError(f"cannot read {path!r} as safetensors: {err}") from err
    if ext in (".pth", ".pt", ".bin"):
        try:
            import torch
        except ImportError:
            raise ConfigError(
                f"reading {path!r} needs PyTorch, which is not installed. Either install it "
                f"(pip install torch --index-url https://download.pytorch.org/whl/cpu) or, where torch is "
                f"installed, save the file as .safetensors and convert that: python -c \"import torch; "
                f"from safetensors.torch import save_file; save_file(torch.load('{os.path.basename(path)}', "
                f"map_location='cpu'), 'resnet50.safetensors')\"") from None
        state = torch.load(path, map_location="cpu")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConfigError(f"{path!r} holds a {type(state).__name__}, not a state dict")
        return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    if ext == ".pdparams":
        state = paddle.load(path)
        if not isinstance(state, dict):
            raise ConfigError(f"{path!r} holds a {type(state).__name__}, not a state dict")
        return {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in state.items()}
    raise ConfigError(f"{path!r}: unknown weights format {ext!r}; give .safetensors, .pth/.pt or .pdparams")


def convert_resnet50(state: Dict[str, np.ndarray], source: str = "weights") -> Tuple[Dict[str, np.ndarray], str]:
    """``(state, layout)``: a ``ResNet50_last_stage_stride1`` backbone state dict (no ``fc``) from
    ``torchvision`` or ``paddleclas`` ResNet-50 weights. Strict: every key used and every tensor
    produced with its exact shape, else one ConfigError lists all problems."""
    from ppise.arch.backbone.resnet_stride1 import ResNet50_last_stage_stride1

    target = {k: _shape(v) for k, v in ResNet50_last_stage_stride1().state_dict().items() if not k.startswith("fc.")}
    if "conv1.weight" in state:
        layout, mapped, unknown = "torchvision", {}, []
        for key, value in state.items():
            try:
                new = torchvision_to_ppise_key(key)
            except KeyError:
                unknown.append(key)
                continue
            if new is not None:
                mapped[new] = np.asarray(value)
    elif "stem.0.conv.weight" in state:
        layout = "paddleclas"
        mapped = {k: np.asarray(v) for k, v in state.items() if not k.startswith("fc.")}
        unknown = [k for k in mapped if k not in target]
    else:
        raise ConfigError(f"{source}: not a ResNet-50 state dict of torchvision (conv1.weight, layer1.0.conv1.weight, "
                          f"...) or PaddleClas (stem.0.conv.weight, blocks.0.conv0.conv.weight, ...); its first keys "
                          f"are {sorted(state)[:5]}")
    bad = [f"{k} {list(_shape(mapped[k]))} vs {list(s)}" for k, s in target.items() if k in mapped and _shape(mapped[k]) != s]
    problems = [_listing(title, items) for title, items in [
        (f"key(s) of the {layout} file that a ResNet-50 does not have", sorted(unknown)),
        ("backbone tensor(s) the file does not provide", [k for k in target if k not in mapped]),
        ("shape mismatch(es) (file vs ResNet-50)", bad)] if items]
    if problems:
        raise ConfigError(f"{source} is not a ResNet-50 ({layout} layout): " + "; ".join(problems))
    return {k: mapped[k].astype(np.float32) for k in target}, layout


def convert_resnet50_file(src: str, dst: str) -> Dict[str, Any]:
    """Convert ``src`` (see :func:`read_state_dict`) to ``dst`` (.pdparams); returns a summary."""
    state, layout = convert_resnet50(read_state_dict(src), source=src)
    if not dst.endswith(".pdparams"):
        dst += ".pdparams"
    save_state_dict_atomic({k: paddle.to_tensor(v) for k, v in state.items()}, dst)
    return {"src": src, "dst": dst, "layout": layout, "tensors": len(state)}
