"""BatchNorm over fixed-size chunks of the training batch (``Arch.bn_batch_size``).

The official ISE / cluster-contrast runs use ``nn.DataParallel`` on 4 GPUs: each BN layer
normalises each 64-image chunk of the 256 batch with its own statistics and only the first
replica's running statistics are kept, while the losses see the whole batch. This does the
same on any number of devices.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import paddle
import paddle.nn as nn

from ppise.errors import ConfigError


def check_bn_batch_size(value, where: str = "Arch.bn_batch_size") -> Optional[int]:
    """None (off) or a positive int; anything else is a ConfigError naming ``where``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be null (off) or a positive integer, got {value!r}")
    return value


def _bn_layers(model: nn.Layer) -> List[nn.Layer]:
    return [layer for layer in model.sublayers(include_self=True)
            if isinstance(layer, (nn.layer.norm._BatchNormBase, nn.BatchNorm)) and not getattr(layer, "_use_global_stats", False)]


def forward_in_chunks(forward: Callable[..., Dict[str, paddle.Tensor]], model: nn.Layer, x: paddle.Tensor,
                      label: Optional[paddle.Tensor], chunk: int) -> Dict[str, paddle.Tensor]:
    """``forward(x_c, label_c)`` for each chunk of ``chunk`` rows, outputs concatenated. Only the
    first chunk updates the running statistics; later ones update scratch copies swapped in and
    out, never written in place (autograd keeps versioned references to what a BN op saw)."""
    n = int(x.shape[0])
    layers = _bn_layers(model)
    outs: List[Dict[str, paddle.Tensor]] = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        real: List[Tuple[paddle.Tensor, paddle.Tensor]] = []
        if start > 0:
            for layer in layers:
                real.append((layer._parameters["_mean"], layer._parameters["_variance"]))
                layer._parameters["_mean"] = layer._mean.detach().clone()
                layer._parameters["_variance"] = layer._variance.detach().clone()
        try:
            outs.append(forward(x[start:stop], None if label is None else label[start:stop]))
        finally:
            for layer, (mean, var) in zip(layers, real):
                layer._parameters["_mean"], layer._parameters["_variance"] = mean, var
    return {key: paddle.concat([o[key] for o in outs], axis=0) for key in outs[0]}
