"""Heads: importing this package registers them in ``ppise.registry.HEADS``.

``ise.py`` (ISEHead) is optional at import time: it is imported only if the module exists,
so this package works while it is being written.
"""
import importlib.util

from . import fc  # noqa: F401  (registration side effects)
from .fc import FC

__all__ = ["FC"]

if importlib.util.find_spec(__name__ + ".ise") is not None:
    try:
        from . import ise  # noqa: F401
    except ImportError as _err:  # a half-written ise.py must not break the model zoo
        from ppise.utils.logger import logger as _logger

        _logger.warning("ppise.arch.head.ise not importable, ISEHead unavailable: %s", _err)
