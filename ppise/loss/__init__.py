"""Losses; importing this package registers them in ``ppise.registry.LOSSES``."""
from .builder import build_losses
from .cluster_memory import ClusterMemoryLoss
from .label_preserving import LabelPreservingLoss
from .paddleclas_compat import CELoss, SupConLoss
from .triplet import TripletLossV2

__all__ = ["build_losses", "ClusterMemoryLoss", "LabelPreservingLoss", "CELoss", "SupConLoss", "TripletLossV2"]
