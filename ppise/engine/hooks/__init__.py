"""Training hooks (registered in ``ppise.registry.HOOKS``)."""
from .base import Hook
from .checkpoint import CheckpointHook
from .cluster import ClusterHook
from .consistency import RankConsistencyHook
from .evaluation import EvalHook
from .logger import LoggerHook

__all__ = ["Hook", "ClusterHook", "EvalHook", "CheckpointHook", "LoggerHook", "RankConsistencyHook"]
