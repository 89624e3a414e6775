"""BNNeck (Luo et al. 2019) with PaddleClas's semantics and key names (``feat_bn.*``).

As in PaddleClas 2.6 the BN bias is trainable by default (its ``bias_attr`` default is None);
pass ``bias_attr: {trainable: false}`` for the frozen-bias variant of the original paper.
"""
from __future__ import annotations

from typing import Any, Optional

import paddle
import paddle.nn as nn

from ppise.arch.param_attr import param_attr_from_config
from ppise.registry import NECKS


@NECKS.register
class BNNeck(nn.Layer):
    """Flatten ``[N, C, 1, 1]`` (or ``[N, C]``) then BatchNorm1D(C): features for cosine retrieval."""

    def __init__(self, num_features: int, weight_attr: Any = None, bias_attr: Any = None,
                 use_global_stats: Optional[bool] = None) -> None:
        super().__init__()
        w_attr = param_attr_from_config(weight_attr, "Arch.Neck.weight_attr")
        if w_attr is None:
            w_attr = paddle.ParamAttr(initializer=nn.initializer.Constant(1.0))
        self.feat_bn = nn.BatchNorm1D(num_features, momentum=0.9, epsilon=1e-5, weight_attr=w_attr,
                                      bias_attr=param_attr_from_config(bias_attr, "Arch.Neck.bias_attr"),
                                      use_global_stats=use_global_stats)
        self.flatten = nn.Flatten()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.feat_bn(self.flatten(x))
