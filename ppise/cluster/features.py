"""Input checks for clustering: one place that turns bad features into a clear DataError."""
from __future__ import annotations

import numpy as np

from ppise.errors import DataError


def check_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """C-contiguous float32 rows scaled to unit L2 norm, as the Jaccard definition assumes
    (normalised, not refused: the answer must not depend on the extractor)."""
    if hasattr(features, "numpy") and not isinstance(features, np.ndarray):
        features = features.numpy()  # a paddle / torch tensor
    x = np.asarray(features)
    if x.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (num_samples x dim), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name}: empty input of shape {x.shape}; nothing to cluster")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{name}: expected numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(f"{name}: row {int(bad[0])} contains NaN or inf ({bad.size} bad rows in total)")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    if not (norms > 0).all():
        bad = np.flatnonzero(~(norms > 0))
        raise DataError(f"{name}: row {int(bad[0])} is all zeros and cannot be L2-normalised ({bad.size} such rows)")
    if np.abs(norms - 1.0).max() > 1e-6:
        x = x / norms.astype(np.float32)[:, None]
    return x
