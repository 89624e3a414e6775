"""ResNetMini: a ~1M-parameter residual net that trains in minutes on 2 CPU cores.

Plain 3x3 convolutions (what Paddle's CPU kernels run fastest), a stride-2 stem plus max-pool
(128x64 -> 32x16 before any wide layer) and ``last_stride=1`` (an 8x4 final map, as the
stride-1 ResNet-50 keeps for re-ID). Children run in order, so ``BackboneStopLayer: avg_pool``
gives ``[N, C, 1, 1]`` and ``stages``/``proj`` give the map.
"""
from __future__ import annotations

from typing import Optional, Sequence

import paddle
import paddle.nn as nn

from ppise.errors import ConfigError
from ppise.registry import BACKBONES


class _ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, act: bool = True) -> None:
        # He init suits ReLU nets trained from scratch (no ImageNet weights here)
        conv_attr = paddle.ParamAttr(initializer=nn.initializer.KaimingNormal())
        layers = [nn.Conv2D(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2,
                            weight_attr=conv_attr, bias_attr=False),
                  nn.BatchNorm2D(out_ch)]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class BasicBlock(nn.Layer):
    """Two 3x3 conv-BN with a residual; a 1x1 projection when shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv0 = _ConvBNReLU(in_ch, out_ch, 3, stride)
        self.conv1 = _ConvBNReLU(out_ch, out_ch, 3, 1, act=False)
        self.short = _ConvBNReLU(in_ch, out_ch, 1, stride, act=False) if (stride != 1 or in_ch != out_ch) else None
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = self.short(x) if self.short is not None else x
        return self.relu(self.conv1(self.conv0(x)) + identity)


@BACKBONES.register
class ResNetMini(nn.Layer):
    """Small residual backbone for CPU training and tests: ``widths`` / ``depths`` (basic blocks)
    of the 4 stages; ``out_channels``, if set and not ``widths[-1]``, adds a 1x1 conv-BN-ReLU."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), depths: Sequence[int] = (1, 1, 1, 1),
                 stem_channels: int = 32, last_stride: int = 1, out_channels: Optional[int] = None,
                 input_image_channel: int = 3) -> None:
        super().__init__()
        widths, depths = list(widths), list(depths)
        if len(widths) != 4 or len(depths) != 4 or min(widths + depths) < 1:
            raise ConfigError(f"ResNetMini widths and depths must be 4 positive ints each, got {widths} and {depths}")
        if last_stride not in (1, 2):
            raise ConfigError(f"ResNetMini last_stride must be 1 or 2, got {last_stride!r}")
        self.stem = _ConvBNReLU(input_image_channel, stem_channels, 3, 2)
        self.max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        blocks = []
        in_ch = stem_channels
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            stride = (1, 2, 2, last_stride)[stage]
            for i in range(depth):
                blocks.append(BasicBlock(in_ch, width, stride if i == 0 else 1))
                in_ch = width
        self.stages = nn.Sequential(*blocks)
        if out_channels is not None and out_channels != in_ch:
            if out_channels < 1:
                raise ConfigError(f"ResNetMini out_channels must be positive, got {out_channels!r}")
            self.proj = _ConvBNReLU(in_ch, out_channels, 1, 1)
            in_ch = out_channels
        else:
            self.proj = nn.Identity()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten()
        self.out_channels = in_ch

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for layer in self.children():
            x = layer(x)
        return x
