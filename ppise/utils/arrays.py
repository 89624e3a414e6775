"""Small numpy helpers shared by clustering, evaluation, deploy and the parity check."""
from __future__ import annotations

import numpy as np

EPS = 1e-12


def l2_normalize(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``x`` divided by its L2 norm along ``axis``, as float32; zero rows stay zero (norm floored at 1e-12)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), np.float32(EPS))
