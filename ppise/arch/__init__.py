"""Model architecture: ``build_model(Arch section) -> RecModel``; importing this package
registers every ppise backbone, neck and head."""
from . import backbone, head, neck  # noqa: F401  (registration side effects)
from .rec_model import RecModel, apply_stop_layer, build_backbone, build_model, stop_after

__all__ = ["RecModel", "apply_stop_layer", "build_backbone", "build_model", "stop_after"]
