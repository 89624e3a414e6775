"""synthreid: procedurally drawn re-ID sets in the exact Market-1501 layout (demo and test tooling).

Not part of the ppise library: it exists so the demo configs, the tests and CI have a
Market-format dataset without downloading one. ``make_synthetic_reid`` writes a set;
``make_source_set`` writes a *labelled source* for supervised pre-training (another seed,
identity numbers disjoint from the target's, most identities in the training split).
"""
from .synthetic import MARKET_DIR, SPLITS, dataset_present, dataset_root, make_source_set, make_synthetic_reid

__all__ = ["make_synthetic_reid", "make_source_set", "dataset_present", "dataset_root", "MARKET_DIR", "SPLITS"]
