"""Retrieval metrics (mAP, CMC rank-k / Recall@k, mINP) under two protocols, by ``evaluate``.

The classes only let a PaddleClas ``Metric.Eval`` list (``- Recallk: {topk: [1, 5]}``,
``- mAP: {}``) be validated by name through ``ppise.registry.METRICS`` and its options read.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

from ..errors import ConfigError
from ..registry import METRICS
from .evaluate import DEFAULT_TOPK, PROTOCOLS, MetricInputError, evaluate

__all__ = ["evaluate", "topk_from_config", "build_eval_metrics", "MetricInputError", "PROTOCOLS",
           "DEFAULT_TOPK", "mAP", "Recallk", "mINP"]


class _RetrievalMetric:
    """Options of one ``Metric.Eval`` entry; ``descending`` as in newer PaddleClas."""

    def __init__(self, descending: bool = True) -> None:
        if descending is not True:
            raise ConfigError(
                f"Metric.Eval {type(self).__name__}.descending must be true (ppise ranks "
                f"by similarity, highest first), got {descending!r}")
        self.descending = descending


@METRICS.register
class mAP(_RetrievalMetric):  # noqa: N801 - PaddleClas config name
    """Mean average precision."""


@METRICS.register
class mINP(_RetrievalMetric):  # noqa: N801 - PaddleClas config name
    """Mean inverse negative penalty (Ye et al. 2021)."""


@METRICS.register
class Recallk(_RetrievalMetric):
    """CMC / Recall@k at each k of ``topk`` (reported as ``rank{k}``)."""

    def __init__(self, topk: Union[int, Sequence[int]] = (1, 5), descending: bool = True) -> None:
        super().__init__(descending)
        ks = [topk] if isinstance(topk, int) and not isinstance(topk, bool) else topk
        if not isinstance(ks, (list, tuple)) or not ks or not all(
                isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
            raise ConfigError(f"Metric.Eval Recallk.topk must be a positive int or a list of them, got {topk!r}")
        self.topk: Tuple[int, ...] = tuple(ks)


def build_eval_metrics(metric_cfg: Any) -> List[_RetrievalMetric]:
    """Instantiate every ``Metric.Eval`` entry (or the whole ``Metric`` section's); unknown names
    or options raise ConfigError."""
    if isinstance(metric_cfg, dict):
        metric_cfg = metric_cfg.get("Eval") or []
    if metric_cfg is not None and not isinstance(metric_cfg, list):
        raise ConfigError(f"Metric.Eval must be a list of metrics, got {metric_cfg!r}")
    return [METRICS.build(spec, f"Metric.Eval.{i}") for i, spec in enumerate(metric_cfg or [])]


def topk_from_config(metric_cfg_list: Optional[Any]) -> Tuple[int, ...]:
    """The ranks to report: (1, 5, 10) plus every ``Recallk.topk`` in ``Metric.Eval``."""
    recalls = [m.topk for m in build_eval_metrics(metric_cfg_list) if isinstance(m, Recallk)]
    return tuple(sorted(set(DEFAULT_TOPK).union(*recalls)))
