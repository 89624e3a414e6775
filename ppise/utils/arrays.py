"""Row normalisation shared by the losses, clustering, evaluation, deploy and the parity check."""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

EPS = 1e-12


def l2_normalize(x: Any, axis: int = 1) -> Any:
    """``x`` divided by its L2 norm along ``axis``; zero rows stay zero (norm floored at 1e-12).

    numpy (or lists) in: float32 numpy out. A paddle Tensor stays a Tensor, differentiable
    through plain elementwise ops: on CPU their backward costs a quarter of ``F.normalize``'s
    ``p_norm`` gradient, which was most of the ISE step's overhead (benchmarks/bench_ise_step.py).
    """
    paddle = sys.modules.get("paddle")
    if paddle is not None and isinstance(x, paddle.Tensor):
        squares = paddle.clip((x * x).sum(axis=axis, keepdim=True), min=EPS * EPS)
        return x * paddle.rsqrt(squares)  # the clip's zero gradient keeps zero rows finite
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), np.float32(EPS))
