"""Training hooks; the builder lists them in execution order (``ppise/engine/builder.py``)."""
from ..trainer import Hook
from .checkpoint import CheckpointHook
from .consistency import RankConsistencyHook
from .evaluation import EvalHook
from .logger import LoggerHook

__all__ = ["Hook", "EvalHook", "CheckpointHook", "LoggerHook", "RankConsistencyHook"]
