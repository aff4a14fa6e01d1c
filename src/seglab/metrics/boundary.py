"""Boundary IoU and the boundary F-score from per-image boundary counts ``[N, 7, C]``
(counted from label maps by :mod:`seglab.boundary`, rows :data:`COUNT_KEYS`).

**Boundary IoU** (Cheng et al., CVPR 2021): for each class, the IoU of the truth pixels and
the predicted pixels that lie within ``d`` pixels of their own mask's contour, ``d`` = 2% of
the image diagonal (rounded, at least 1). As in the authors' code (a 3x3 erosion repeated
``d`` times on a zero-padded mask), the distance is the chessboard one and the image border
counts as contour. Intersections and unions are summed over the dataset like mIoU's.

**Boundary F-score** (BF, Csurka et al., BMVC 2013): per image and class, the contour pixels
(pixels of the class with an 8-neighbour of another label; the image border is not a
contour) of the prediction within ``theta`` of the truth's contour (precision) and vice
versa (recall), F = 2PR / (P + R); ``theta`` = 0.75% of the diagonal. Averaged over the images
where the class occurs in the truth or the prediction, then over classes. One deviation, for
speed: the tolerance is measured in chessboard distance (a square), not Euclidean (a disc).

Classes whose boundary union is empty (or with no contour in any image, for BF) have no
score and are left out of the means, like absent classes in mIoU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seglab.metrics.registry import register_metric, registered_metrics

BIOU_DILATION_RATIO = 0.02
BF_TOLERANCE_RATIO = 0.0075
# Rows of the per-image boundary counts [N, 7, C].
COUNT_KEYS = (
    "biou_inter", "biou_truth", "biou_pred",
    "bf_pred", "bf_pred_matched", "bf_truth", "bf_truth_matched",
)


def image_bf(boundary: np.ndarray) -> np.ndarray:
    """Each image's BF per class ``[N, C]`` from counts ``[N, 7, C]``; NaN where the class
    has no contour in the truth or the prediction of that image."""
    pred_total, pred_hit, truth_total, truth_hit = (
        boundary[:, k].astype(np.float64) for k in range(3, 7)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred_total > 0, pred_hit / np.maximum(pred_total, 1), 0.0)
        recall = np.where(truth_total > 0, truth_hit / np.maximum(truth_total, 1), 0.0)
        f = np.where(precision + recall > 0,
                     2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    return np.where((pred_total + truth_total) > 0, f, np.nan)


def class_boundary_iou(boundary: np.ndarray) -> np.ndarray:
    """Dataset-level Boundary IoU per class ``[C]`` (NaN where the boundary union is empty)."""
    inter, truth, pred = (boundary[:, k].sum(0).astype(np.float64) for k in range(3))
    union = truth + pred - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)


def class_bf(boundary: np.ndarray) -> np.ndarray:
    """Dataset-level BF per class ``[C]``: the mean over the images where it is defined."""
    bf_images = image_bf(boundary)
    defined = np.isfinite(bf_images)
    count = defined.sum(0)
    return np.where(count > 0, np.where(defined, bf_images, 0.0).sum(0) / np.maximum(count, 1),
                    np.nan)


def _finite_mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@register_metric("boundary_miou", "Boundary IoU", source="boundary", shown_in=("console",))
def boundary_miou(boundary: np.ndarray) -> float:
    return _finite_mean(class_boundary_iou(boundary))


@register_metric("mean_bf", "BF", source="boundary", shown_in=("console",))
def mean_bf(boundary: np.ndarray) -> float:
    return _finite_mean(class_bf(boundary))


def boundary_scores(boundary: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Every registered boundary score (``boundary_miou``, ``mean_bf``) and the per-class
    values, from the counts ``[N, 7, C]`` of the images scored."""
    biou, bf = class_boundary_iou(boundary), class_bf(boundary)
    doc: dict[str, Any] = {m.key: m.compute(boundary)
                           for m in registered_metrics(source="boundary")}
    doc["boundary"] = {
        "dilation_ratio": BIOU_DILATION_RATIO,
        "bf_tolerance_ratio": BF_TOLERANCE_RATIO,
        "distance": "chessboard",
        "per_class": {
            name: {"boundary_iou": float(biou[j]), "bf": float(bf[j])}
            for j, name in enumerate(names)
        },
    }
    return doc
