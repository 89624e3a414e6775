"""RecModel: backbone -> stop layer -> neck -> head, as PaddleClas's ``RecModel``.

Same config schema, output dict and state-dict keys, so PaddleClas weights load strictly; but
components come from ppise's registries (PaddleClas's backbone zoo as a fallback, never
``eval``), every config mistake is a ConfigError naming the key, and nothing is downloaded.
"""
from __future__ import annotations

import copy
import difflib
import re
from typing import Any, Dict, List, Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppise.errors import ConfigError
from ppise.registry import BACKBONES, HEADS, NECKS, close_match
from ppise.utils.logger import logger
from ppise.utils.weights import load_pretrained, resolve_weights_path

from .backbone import paddleclas_zoo
from .bn_chunks import check_bn_batch_size, forward_in_chunks

ARCH_KEYS = ("name", "infer_output_key", "infer_add_softmax", "Backbone", "BackboneStopLayer", "Neck", "Head",
             "head_feature_from", "use_sync_bn", "bn_batch_size")
OUTPUT_KEYS = ("backbone", "neck", "features", "logits")


class RecModel(nn.Layer):
    """``forward(x, label=None) -> dict``; ``inference_output(out)`` picks what export/eval use."""

    def __init__(self, backbone: nn.Layer, neck: Optional[nn.Layer] = None, head: Optional[nn.Layer] = None,
                 head_feature_from: str = "neck", infer_output_key: str = "features",
                 infer_add_softmax: bool = False) -> None:
        super().__init__()
        if head_feature_from not in ("neck", "backbone"):
            raise ConfigError(f"Arch.head_feature_from must be 'neck' or 'backbone', got {head_feature_from!r}")
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.head_feature_from = head_feature_from
        self.infer_output_key = infer_output_key
        self.infer_add_softmax = bool(infer_add_softmax)

    bn_batch_size: Optional[int] = None  # Arch.bn_batch_size: BN over chunks in training (bn_chunks.py)

    def forward(self, x: paddle.Tensor, label: Optional[paddle.Tensor] = None) -> Dict[str, paddle.Tensor]:
        if self.training and self.bn_batch_size and int(x.shape[0]) > self.bn_batch_size:
            return forward_in_chunks(self.forward, self, x, label, self.bn_batch_size)
        out: Dict[str, paddle.Tensor] = {"backbone": self.backbone(x)}
        if self.neck is not None:
            out["neck"] = self.neck(out["backbone"])
        out["features"] = out.get("neck", out["backbone"])
        if self.head is not None:
            src = out["backbone"] if self.head_feature_from == "backbone" else out["features"]
            out["logits"] = self.head(src, label)
        return out

    def inference_output(self, out: Dict[str, paddle.Tensor]) -> paddle.Tensor:
        """The tensor named by ``Arch.infer_output_key`` (softmaxed if ``infer_add_softmax``)."""
        if self.infer_output_key not in out:
            raise ConfigError(f"Arch.infer_output_key: {self.infer_output_key!r} is not an output of this model; "
                              f"it gives {sorted(out)}")
        y = out[self.infer_output_key]
        return F.softmax(y, axis=-1) if self.infer_add_softmax else y


def _parse_layer_path(pattern: str) -> List[str]:
    """``'blocks[12]'`` -> ['blocks', '12'];  ``'a.b[1][2]'`` -> ['a', 'b', '1', '2']."""
    keys: List[str] = []
    for part in pattern.split("."):
        m = re.fullmatch(r"([A-Za-z_]\w*)((?:\[\d+\])*)", part)
        if m is None:
            return []
        keys.append(m.group(1))
        keys.extend(re.findall(r"\[(\d+)\]", m.group(2)))
    return keys


def stop_after(root: nn.Layer, pattern: str) -> bool:
    """Turn every sub-layer that runs after ``pattern`` into an identity (PaddleClas semantics):
    at each level of the path, later siblings in registration order, which relies on the network
    running its children in order. Returns False (changing nothing) if the path does not exist."""
    keys = _parse_layer_path(pattern)
    if not keys:
        return False
    layers = [root]
    for key in keys:  # validate the whole path before changing anything
        if key not in layers[-1]._sub_layers:
            return False
        layers.append(layers[-1]._sub_layers[key])
    for layer, key in zip(layers, keys):
        names = list(layer._sub_layers)
        for name in names[names.index(key) + 1:]:
            layer._sub_layers[name] = nn.Identity()
    return True


def apply_stop_layer(backbone: nn.Layer, cfg: Any, where: str) -> None:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str):
        raise ConfigError(f"{where} must be a mapping with a 'name' (a sub-layer path such as avg_pool), got {cfg!r}")
    name = cfg["name"]
    theseus = getattr(backbone, "stop_after", None)  # PaddleClas TheseusLayer
    ok = theseus(name) if callable(theseus) else stop_after(backbone, name)
    if not ok:
        raise ConfigError(f"{where}.name: the backbone has no sub-layer {name!r}; "
                          f"its top-level sub-layers are {list(backbone._sub_layers)}")


def _unknown_backbone(name: str, where: str) -> ConfigError:
    ours = list(BACKBONES.names())
    close = difflib.get_close_matches(name, ours, n=3, cutoff=0.6) + paddleclas_zoo.close_paddleclas_names(name)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown backbone '{name}' (at {where}.name); ppise backbones: {', '.join(ours)}; "
                       f"any backbone name of PaddleClas's zoo (paddleclas.ppcls.arch.backbone, e.g. ResNet18, "
                       f"PPLCNet_x0_25, MobileNetV3_small_x0_35) is also accepted.{hint}")


def _load_backbone_weights(backbone: nn.Layer, path: str, where: str) -> None:
    key = f"{where}.pretrained"
    resolve_weights_path(path, key)  # a missing file fails here, before any fallback
    try:
        load_pretrained(backbone, path, strict=False, config_key=key)
    except ConfigError as err:
        if "share no key" not in str(err):
            raise
        # a full RecModel checkpoint (backbone.* keys) is accepted as backbone weights too
        load_pretrained(backbone, path, strict=False, key_prefix="backbone.", config_key=key)


def build_backbone(cfg: Any, where: str = "Arch.Backbone", skip_pretrained: bool = False) -> nn.Layer:
    """ppise registry first, then PaddleClas's zoo by name; weights only from a local file."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ConfigError(f"{where} must be a mapping with a 'name' key, got {cfg!r}")
    if not isinstance(cfg["name"], str):
        raise ConfigError(f"{where}.name must be a string, got {cfg['name']!r}")
    cfg = copy.deepcopy(cfg)
    name = cfg.pop("name")
    pretrained = cfg.pop("pretrained", False)
    cfg.pop("use_ssld", None)  # only selects which ImageNet file to download: meaningless offline
    if name in BACKBONES:
        backbone = BACKBONES.build(dict(cfg, name=name), where)
    else:
        builder = paddleclas_zoo.find_paddleclas_backbone(name)
        if builder is None:
            raise _unknown_backbone(name, where)
        backbone = paddleclas_zoo.build_paddleclas_backbone(builder, name, cfg, where)
    if pretrained is True:
        if skip_pretrained:
            logger.info("%s.pretrained: True ignored: the full model weights are loaded afterwards", where)
        else:
            raise ConfigError(
                f"{where}.pretrained: True asks to download ImageNet weights for '{name}', but weights cannot be "
                f"downloaded here (no internet). Pass a local file instead: {where}.pretrained: "
                f"/path/to/{name if name != 'ResNet50_last_stage_stride1' else 'ResNet50'}_pretrained.pdparams "
                f"(with or without .pdparams), or load a whole model with Global.pretrained_model: /path/to/model, "
                f"or set {where}.pretrained: False to train from scratch")
    elif isinstance(pretrained, str) and pretrained:
        if not skip_pretrained:
            _load_backbone_weights(backbone, pretrained, where)
    elif pretrained not in (False, None):
        raise ConfigError(f"{where}.pretrained must be true, false or a path to a .pdparams file, got {pretrained!r}")
    return backbone


def build_model(arch_cfg: Dict[str, Any], where: str = "Arch", skip_backbone_pretrained: bool = False) -> RecModel:
    """Build a RecModel from the ``Arch`` section. ``skip_backbone_pretrained``: full weights are
    loaded right after, so the backbone's ``pretrained`` (``True`` in PaddleClas's official infer
    config) is neither an error nor read."""
    if not isinstance(arch_cfg, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(arch_cfg).__name__}")
    name = arch_cfg.get("name", "RecModel")
    if name != "RecModel":
        raise ConfigError(f"{where}.name: ppise builds 'RecModel' only, got {name!r}")
    for key in arch_cfg:
        if key not in ARCH_KEYS:
            logger.warning(f"{where}.{key} is not used by ppise{close_match(key, ARCH_KEYS)}")
    if "Backbone" not in arch_cfg:
        raise ConfigError(f"{where}.Backbone is required (a mapping with a 'name')")
    backbone = build_backbone(arch_cfg["Backbone"], f"{where}.Backbone", skip_backbone_pretrained)
    if arch_cfg.get("BackboneStopLayer") is not None:
        apply_stop_layer(backbone, arch_cfg["BackboneStopLayer"], f"{where}.BackboneStopLayer")
    neck = NECKS.build(copy.deepcopy(arch_cfg["Neck"]), f"{where}.Neck") if arch_cfg.get("Neck") is not None else None
    head = HEADS.build(copy.deepcopy(arch_cfg["Head"]), f"{where}.Head") if arch_cfg.get("Head") is not None else None
    infer_key = arch_cfg.get("infer_output_key", "features")
    if infer_key not in OUTPUT_KEYS:
        raise ConfigError(f"{where}.infer_output_key must be one of {list(OUTPUT_KEYS)}, got {infer_key!r}")
    if infer_key == "logits" and head is None:
        raise ConfigError(f"{where}.infer_output_key is 'logits' but {where}.Head gives no logits in forward")
    add_softmax = arch_cfg.get("infer_add_softmax", False)
    if not isinstance(add_softmax, bool):
        raise ConfigError(f"{where}.infer_add_softmax must be true or false, got {add_softmax!r}")
    model = RecModel(backbone, neck, head, head_feature_from=arch_cfg.get("head_feature_from", "neck"),
                     infer_output_key=infer_key, infer_add_softmax=add_softmax)
    model.bn_batch_size = check_bn_batch_size(arch_cfg.get("bn_batch_size"), f"{where}.bn_batch_size")
    if arch_cfg.get("use_sync_bn", False):
        if paddle.is_compiled_with_cuda() and paddle.distributed.get_world_size() > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            logger.warning("%s.use_sync_bn ignored: SyncBatchNorm needs several GPUs", where)
    return model
