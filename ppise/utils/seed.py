"""Seeding for reproducible runs (python, numpy, paddle)."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Dict

import numpy as np


def seed_everything(seed: int) -> None:
    import paddle

    random.seed(seed)
    np.random.seed(seed % (2**32))
    paddle.seed(seed)


def rng_state() -> Dict[str, Any]:
    """The RNG states a checkpoint must carry for an exact resume."""
    import paddle

    return {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}


def set_rng_state(state: Dict[str, Any]) -> None:
    import paddle

    if not state:
        return
    if "python" in state:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]) if isinstance(py, (list, tuple)) else py)
    if "numpy" in state:
        np.random.set_state(tuple(state["numpy"]))
    if "paddle" in state:
        with contextlib.suppress(Exception):  # generator layout differs across devices
            paddle.set_rng_state(state["paddle"])
