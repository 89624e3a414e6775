"""Heads: importing this package registers them in ``ppise.registry.HEADS``.

ISE's support generator is not a head (it is part of the training objective):
see ``ppise/loss/ise_support.py``.
"""
from . import fc  # noqa: F401  (registration side effects)
