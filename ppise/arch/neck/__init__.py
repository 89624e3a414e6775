"""Necks: importing this package registers them in ``ppise.registry.NECKS`` (``FC``, PaddleClas's
embedding gear, is registered as a neck too, from ``ppise.arch.head.fc``)."""
from .bnneck import BNNeck
from .gem import GeM

__all__ = ["BNNeck", "GeM"]
