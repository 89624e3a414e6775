"""PaddleClas's ``FC`` gear: a linear layer named ``fc`` (keys ``head.fc.weight`` / ``head.fc.bias``).

Registered both as a head (classifier over ``class_num`` ids) and as a neck (an embedding
layer, PaddleClas configs use it that way: ``Neck: {name: FC, embedding_size, class_num}``).
"""
from __future__ import annotations

from typing import Any, Optional

import paddle
import paddle.nn as nn

from ppise.arch.param_attr import param_attr_from_config
from ppise.registry import HEADS, NECKS


class FC(nn.Layer):
    """``[N, embedding_size]`` (or ``[N, C, 1, 1]``, flattened) -> ``[N, class_num]``."""

    def __init__(self, embedding_size: int, class_num: int, weight_attr: Any = None, bias_attr: Any = None) -> None:
        super().__init__()
        self.embedding_size = int(embedding_size)
        self.class_num = int(class_num)
        w_attr = param_attr_from_config(weight_attr, "weight_attr")
        if w_attr is None:
            w_attr = paddle.ParamAttr(initializer=nn.initializer.XavierNormal())
        self.fc = nn.Linear(self.embedding_size, self.class_num, weight_attr=w_attr,
                            bias_attr=param_attr_from_config(bias_attr, "bias_attr"))

    def forward(self, input: paddle.Tensor, label: Optional[paddle.Tensor] = None) -> paddle.Tensor:  # noqa: A002
        if input.ndim > 2:
            input = paddle.flatten(input, start_axis=1)
        return self.fc(input)


HEADS.register(FC)
NECKS.register(FC)
