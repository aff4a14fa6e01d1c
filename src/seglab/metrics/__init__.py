"""Segmentation metrics: a registry of scores of one confusion matrix (or of per-image
boundary counts) and the metrics document every evaluation writes.

- :mod:`~seglab.metrics.registry`: ``register_metric`` (key, label, format, direction, where
  it is shown); the CLI summary, the report table, k-fold summaries and study objectives read it.
- :mod:`~seglab.metrics.scores`, :mod:`~seglab.metrics.boundary`: the built-in metrics.
- :mod:`~seglab.metrics.document`: ``metrics_from_confusion``, every registered score at once.
- :mod:`~seglab.metrics.confusion`: the confusion matrix from label maps and its torchmetrics
  state (the only module here that needs torch; import it from there).
- :mod:`~seglab.metrics.keys`: metric keys other modules spell (``VAL_MIOU``...).

Adding a metric: a module here with ``@register_metric(...)`` functions, imported below.
The face stays free of torch so that the CLI can read the registry without loading it.
"""

from __future__ import annotations

# The built-in metrics register on import, in the order metrics.json lists them.
from seglab.metrics import boundary, scores  # noqa: F401
from seglab.metrics.counts import ClassCounts
from seglab.metrics.document import NORMALIZE_MODES, metrics_from_confusion, normalize_confusion
from seglab.metrics.keys import (
    BEST_VAL_MIOU,
    MEAN_ACC,
    MIOU,
    PIXEL_ACC,
    VAL_LOSS,
    VAL_MIOU,
    VAL_PIXEL_ACC,
    val_key,
)
from seglab.metrics.registry import (
    PLACES,
    SOURCES,
    Metric,
    find_metric,
    metric_keys,
    register_metric,
    registered_metrics,
    unregister_metric,
)

__all__ = [
    "BEST_VAL_MIOU", "MEAN_ACC", "MIOU", "NORMALIZE_MODES", "PIXEL_ACC", "PLACES", "SOURCES",
    "VAL_LOSS", "VAL_MIOU", "VAL_PIXEL_ACC", "ClassCounts", "Metric",
    "find_metric", "metric_keys", "metrics_from_confusion", "normalize_confusion",
    "register_metric", "registered_metrics", "unregister_metric", "val_key",
]  # fmt: skip
