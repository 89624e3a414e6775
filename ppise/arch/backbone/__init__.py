"""Backbones: importing this package registers ppise's own in ``ppise.registry.BACKBONES``.

Names not registered here resolve through PaddleClas's zoo (see ``paddleclas_zoo``).
"""
from . import resnet_mini, resnet_stride1  # noqa: F401  (registration side effects)
from .paddleclas_zoo import build_paddleclas_backbone, find_paddleclas_backbone, paddleclas_backbone_names
from .resnet_stride1 import ResNet50_last_stage_stride1, ResNetLastStride
from .resnet_mini import ResNetMini

__all__ = [
    "ResNet50_last_stage_stride1",
    "ResNetLastStride",
    "ResNetMini",
    "build_paddleclas_backbone",
    "find_paddleclas_backbone",
    "paddleclas_backbone_names",
]
