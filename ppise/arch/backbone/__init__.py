"""Backbones: importing this package registers ppise's own in ``ppise.registry.BACKBONES``;
other names resolve through PaddleClas's zoo (``paddleclas_zoo``)."""
from . import resnet_mini, resnet_stride1  # noqa: F401  (registration side effects)
