"""Heads: importing this package registers them in ``ppise.registry.HEADS``. (ISE's support
generator is part of the training objective, ``ppise/loss/ise_support.py``, not a head.)"""
from . import fc  # noqa: F401  (registration side effects)
