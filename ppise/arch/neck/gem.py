"""Generalised-mean (GeM) pooling neck: ``(mean_hw clip(x, eps)^p)^(1/p)``, flattened.

p = 1 is average pooling, p -> inf max pooling; a learnable p lets the net choose (Radenovic
et al. 2018). It needs the map: ``BackboneStopLayer`` at the last conv stage (``blocks`` for
ResNet-50, ``stages``/``proj`` for ResNetMini). ``num_features`` adds a BNNeck's BatchNorm1D.
"""
from __future__ import annotations

from typing import Any, Optional

import paddle
import paddle.nn as nn

from ppise.arch.param_attr import param_attr_from_config
from ppise.errors import ConfigError
from ppise.registry import NECKS


@NECKS.register
class GeM(nn.Layer):
    """Keys: ``p`` (shape [1]; frozen when ``learnable`` is false) and, with ``num_features``, ``feat_bn.*``."""

    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6,
                 num_features: Optional[int] = None, bias_attr: Any = None) -> None:
        super().__init__()
        if not isinstance(p, (int, float)) or isinstance(p, bool) or p <= 0:
            raise ConfigError(f"Arch.Neck.p must be a positive number, got {p!r}")
        self.eps = float(eps)
        self.p = self.create_parameter(
            shape=[1], dtype="float32",
            attr=paddle.ParamAttr(initializer=nn.initializer.Constant(float(p)), trainable=bool(learnable)))
        self.feat_bn = None
        if num_features is not None:
            self.feat_bn = nn.BatchNorm1D(num_features, momentum=0.9, epsilon=1e-5,
                                          bias_attr=param_attr_from_config(bias_attr, "Arch.Neck.bias_attr"))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if x.ndim != 4:
            raise ValueError(f"GeM expects a feature map [N, C, H, W], got shape {list(x.shape)}; "
                             "set Arch.BackboneStopLayer to the last conv stage, not avg_pool/fc")
        pooled = paddle.clip(x, min=self.eps).pow(self.p).mean(axis=[2, 3]).pow(1.0 / self.p)
        return self.feat_bn(pooled) if self.feat_bn is not None else pooled
