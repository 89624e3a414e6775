"""ResNet-50 whose last stage keeps stride 1 (the re-ID standard), key-compatible with PaddleClas.

Sub-layer names mirror PaddleClas's ``ResNet50_last_stage_stride1`` (``stem.0.conv``,
``blocks.13.short.conv``, ...), so its state dicts (the official ``ISE_M_model.pdparams``
too) load strictly; the forward walks the children in order, as ``BackboneStopLayer`` needs.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import paddle
import paddle.nn as nn

from ppise.errors import ConfigError
from ppise.registry import BACKBONES

# depth -> bottleneck blocks per stage (torchvision / PaddleClas "vb" layout)
_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_WIDTHS = (64, 128, 256, 512)
_EXPANSION = 4


class ConvBN(nn.Layer):
    """conv (no bias) -> BN -> optional ReLU; named ``conv`` / ``bn`` as in PaddleClas."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, act: bool = True,
                 lr_mult: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2D(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2,
                              weight_attr=paddle.ParamAttr(learning_rate=lr_mult), bias_attr=False)
        self.bn = nn.BatchNorm2D(out_ch, momentum=0.9, epsilon=1e-5,
                                 weight_attr=paddle.ParamAttr(learning_rate=lr_mult),
                                 bias_attr=paddle.ParamAttr(learning_rate=lr_mult))
        self.act = nn.ReLU() if act else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class Bottleneck(nn.Layer):
    """1x1 -> 3x3 (strided) -> 1x1 x4, with a projection shortcut on a stage's first block."""

    def __init__(self, in_ch: int, width: int, stride: int, project: bool, lr_mult: float = 1.0) -> None:
        super().__init__()
        out_ch = width * _EXPANSION
        self.conv0 = ConvBN(in_ch, width, 1, lr_mult=lr_mult)
        self.conv1 = ConvBN(width, width, 3, stride=stride, lr_mult=lr_mult)
        self.conv2 = ConvBN(width, out_ch, 1, act=False, lr_mult=lr_mult)
        self.short = ConvBN(in_ch, out_ch, 1, stride=stride, act=False, lr_mult=lr_mult) if project else None
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = self.short(x) if self.short is not None else x
        return self.relu(self.conv2(self.conv1(self.conv0(x))) + identity)


class ResNetLastStride(nn.Layer):
    """Bottleneck ResNet (PaddleClas "vb") with a configurable last-stage stride: ``fc`` logits
    ``[N, class_num]``, or ``[N, 2048, 1, 1]`` with ``BackboneStopLayer: avg_pool``."""

    def __init__(self, depth: int = 50, last_stride: int = 1, class_num: int = 1000,
                 lr_mult_list: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0), input_image_channel: int = 3) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ConfigError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth!r}")
        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2, got {last_stride!r}")
        lrs = list(lr_mult_list)
        if len(lrs) != 5:
            raise ConfigError(f"lr_mult_list must hold 5 numbers (stem + 4 stages), got {lr_mult_list!r}")
        self.stem = nn.Sequential(ConvBN(input_image_channel, 64, 7, stride=2, lr_mult=lrs[0]))
        self.max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        blocks = []
        in_ch = 64
        strides = (1, 2, 2, last_stride)
        for stage, (n_blocks, width) in enumerate(zip(_DEPTHS[depth], _WIDTHS)):
            for i in range(n_blocks):
                blocks.append(Bottleneck(in_ch, width, strides[stage] if i == 0 else 1, project=i == 0,
                                         lr_mult=lrs[stage + 1]))
                in_ch = width * _EXPANSION
        self.blocks = nn.Sequential(*blocks)
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten()
        bound = 1.0 / math.sqrt(in_ch)
        self.fc = nn.Linear(in_ch, class_num,
                            weight_attr=paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound)))
        self.out_channels = in_ch

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


@BACKBONES.register
def ResNet50_last_stage_stride1(class_num: int = 1000, lr_mult_list: Optional[Sequence[float]] = None,
                                input_image_channel: int = 3) -> ResNetLastStride:
    """ResNet-50 with stride 1 in stage 4: 256x128 input -> 16x8x2048 map (PaddleClas name)."""
    return ResNetLastStride(depth=50, last_stride=1, class_num=class_num,
                            lr_mult_list=lr_mult_list or (1.0,) * 5, input_image_channel=input_image_channel)
