"""Pseudo labels for unsupervised re-ID: kNN -> sparse k-reciprocal Jaccard -> DBSCAN, O(N*k)."""
from ppise.cluster.diagnostics import cluster_diagnostics
from ppise.cluster.jaccard import jaccard_distance
from ppise.cluster.knn import knn_search
from ppise.cluster.pseudo_label import PseudoLabels, pseudo_labels, pseudo_labels_from_config

__all__ = [
    "PseudoLabels",
    "cluster_diagnostics",
    "jaccard_distance",
    "knn_search",
    "pseudo_labels",
    "pseudo_labels_from_config",
]
