"""Losses and training objectives; importing this package registers them
(``ppise.registry.LOSSES`` / ``OBJECTIVES``)."""
from .cluster_memory import ClusterMemoryLoss
from .ise_support import ISESupport, pli_alpha
from .label_preserving import LabelPreservingLoss
from .objective import ClusterContrastObjective, Objective, build_losses, build_objective
from .supervised import CELoss, SupConLoss, SupervisedObjective, class_labels
from .triplet import TripletLossV2

__all__ = ["build_losses", "build_objective", "Objective", "ClusterContrastObjective", "SupervisedObjective", "class_labels", "ClusterMemoryLoss",
           "ISESupport", "pli_alpha", "LabelPreservingLoss", "CELoss", "SupConLoss", "TripletLossV2"]
