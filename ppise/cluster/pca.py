"""Principal axes of features from a row sample: the covariance is D x D whatever N is."""
from __future__ import annotations

from typing import Tuple

import numpy as np

SAMPLE_ROWS = 8192


def sample_pca(x: np.ndarray, rng: np.random.Generator, rows: int = SAMPLE_ROWS) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean float32 [D], eigenvalues [D] largest first, eigenvectors [D, D] as columns in that order)
    of the covariance of at most ``rows`` randomly drawn rows of ``x`` (computed in float64)."""
    n = x.shape[0]
    sample = x[np.sort(rng.choice(n, min(n, rows), replace=False))].astype(np.float64)
    mean = sample.mean(axis=0)
    sample -= mean
    vals, vecs = np.linalg.eigh(sample.T @ sample / sample.shape[0])
    return mean.astype(np.float32), vals[::-1], vecs[:, ::-1]
