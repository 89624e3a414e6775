"""Necks: importing this package registers them in ``ppise.registry.NECKS``.

``FC`` (PaddleClas's embedding gear) is registered as a neck too, from ``ppise.arch.head.fc``.
"""
from . import bnneck, gem  # noqa: F401  (registration side effects)
from .bnneck import BNNeck
from .gem import GeM

__all__ = ["BNNeck", "GeM"]
