"""The metrics document of one confusion matrix: every registered score, per class, normalised.

Undefined values are NaN (written as null in JSON). The class conventions are those of
:mod:`seglab.metrics.counts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seglab.metrics.counts import ClassCounts
from seglab.metrics.registry import registered_metrics

NORMALIZE_MODES = ("truth", "pred", "all")


def normalize_confusion(cm: np.ndarray, by: str = "truth") -> np.ndarray:
    """Confusion matrix as fractions of each truth row, each prediction column, or the total.

    Rows/columns with no pixels are left at 0 rather than NaN.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if by == "truth":
        denom = cm.sum(axis=1, keepdims=True)
    elif by == "pred":
        denom = cm.sum(axis=0, keepdims=True)
    elif by == "all":
        denom = np.array(cm.sum())
    else:
        raise ValueError(f"normalize by must be one of {NORMALIZE_MODES}, got {by!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, cm / np.where(denom > 0, denom, 1), 0.0)
    return out


def metrics_from_confusion(
    cm: np.ndarray, names: Sequence[str] | None = None, *, include_confusion: bool = True
) -> dict[str, Any]:
    """Every seglab score from one confusion matrix (rows = truth, columns = prediction).

    Returns a JSON-ready dict: each metric of the registry computed from the confusion matrix
    (``miou``, ``pixel_acc``, ``mean_acc``, ``fw_iou``, ``mean_dice``, ``precision_*`` /
    ``recall_*`` / ``f1_*``, ``jaccard_*``, then any registered later), ``num_classes``,
    ``num_pixels``, ``classes_excluded_from_mean``, ``per_class`` and, with
    ``include_confusion``, ``confusion`` (counts and the three normalisations).
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    num_classes = cm.shape[0]
    names = list(names) if names is not None else [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class confusion matrix")

    c = ClassCounts.from_confusion(cm)
    doc: dict[str, Any] = {m.key: m.compute(c) for m in registered_metrics(source="confusion")}
    doc.update({
        "num_classes": num_classes,
        "num_pixels": int(c.total),
        "classes_excluded_from_mean": [n for n, p in zip(names, c.present, strict=True) if not p],
        "per_class": {
            name: {
                "iou": float(c.iou[i]),
                "acc": float(c.acc[i]),
                "dice": float(c.dice[i]),
                "precision": float(c.precision[i]),
                "recall": float(c.recall[i]),
                "f1": float(c.f1[i]),
                "support": int(c.truth[i]),
            }
            for i, name in enumerate(names)
        },
    })  # fmt: skip
    if include_confusion:
        doc["confusion"] = {
            "labels": names,
            "counts": cm.tolist(),
            **{f"by_{mode}": normalize_confusion(cm, mode).tolist() for mode in NORMALIZE_MODES},
        }
    return doc
