"""Segmentation metrics from one dataset-level confusion matrix.

Every score seglab reports comes from :func:`metrics_from_confusion`; the matrix itself is
accumulated by :class:`SegMetric`, a torchmetrics ``Metric`` whose state is summed across
processes, so a distributed evaluation gives exactly the scores of a single pass. Scores are
never averages of per-batch scores.

Conventions (rows = truth, columns = prediction; pixels whose truth is ``ignore_index`` are
not counted):

- A class is *present* when it occurs in the truth or in the prediction. Classes absent from
  both have no defined IoU/Dice; they are left out of every mean and listed under
  ``classes_excluded_from_mean``.
- ``acc`` (per-class accuracy, mAcc) is ``tp / truth pixels``, undefined (NaN) for a class with
  no truth pixels, as in mmsegmentation.
- precision/recall/F1 follow scikit-learn over the present classes with ``zero_division=0``:
  a present class that is never predicted has precision 0; one that never occurs in the truth
  has recall 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from seglab.class_ids import class_ids

NORMALIZE_MODES = ("truth", "pred", "all")


def confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Confusion matrix ``[C, C]`` (int64, rows = truth, columns = prediction).

    ``preds`` are class ids ``[N, H, W]`` or logits/probabilities ``[N, C, H, W]`` (argmax is
    taken); ``target`` holds class ids or ``ignore_index``. Truth values outside
    ``0..C-1`` other than ``ignore_index`` are an error (they would silently corrupt scores).
    """
    if preds.is_floating_point() or preds.dim() == target.dim() + 1:
        preds = class_ids(preds)
    if preds.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(preds.shape)} does not match label shape "
            f"{tuple(target.shape)}: upsample the logits to the label size before scoring"
        )
    target = target.reshape(-1).long()
    preds = preds.reshape(-1).long()
    valid = target != ignore_index
    target, preds = target[valid], preds[valid]
    check_class_ids(target, preds, num_classes, ignore_index)
    flat = target * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def check_class_ids(
    target: torch.Tensor, preds: torch.Tensor, num_classes: int, ignore_index: int
) -> None:
    """Refuse truth or predicted ids outside ``0..C-1`` (ignored pixels already removed)."""
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        bad = target[(target < 0) | (target >= num_classes)].unique()[:5].tolist()
        raise ValueError(
            f"label values {bad} are outside 0..{num_classes - 1} and are not the ignore index "
            f"{ignore_index}"
        )
    if preds.numel() and (int(preds.min()) < 0 or int(preds.max()) >= num_classes):
        raise ValueError(f"predicted class ids must lie in 0..{num_classes - 1}")


class SegMetric(Metric):
    """Dataset-level confusion matrix as torchmetrics state (summed across processes).

    ``update(preds, target)`` accepts logits ``[N, C, H, W]`` or class ids ``[N, H, W]``;
    ``compute()`` returns the int64 confusion matrix; :meth:`scores` turns it into the metrics
    document of :func:`metrics_from_confusion`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.names = list(names) if names is not None else None
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.confmat += confusion_matrix(
            preds.detach(), target, self.num_classes, self.ignore_index
        ).to(self.confmat.device)

    def compute(self) -> torch.Tensor:
        return self.confmat.clone()

    def scores(self) -> dict[str, Any]:
        """The full metrics document for the accumulated matrix."""
        return metrics_from_confusion(self.compute().cpu().numpy(), self.names)


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


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` with NaN where ``den == 0``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    chosen = values[mask]
    return float(np.mean(chosen)) if chosen.size else float("nan")


def metrics_from_confusion(
    cm: np.ndarray, names: Sequence[str] | None = None, *, include_confusion: bool = True
) -> dict[str, Any]:
    """Every seglab score from one confusion matrix (rows = truth, columns = prediction).

    Returns a JSON-ready dict with the keys of ``docs/internals.md`` (``miou``, ``pixel_acc``,
    ``mean_acc``, ``fw_iou``, ``mean_dice``, ``precision_*``/``recall_*``/``f1_*``,
    ``jaccard_*``, ``per_class``, ``classes_excluded_from_mean``) plus ``num_pixels`` and,
    with ``include_confusion``, ``confusion`` (counts and the three normalisations).
    Undefined values are NaN (written as null in JSON).
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    num_classes = cm.shape[0]
    names = list(names) if names is not None else [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class confusion matrix")

    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)  # truth pixels per class
    predicted = cm.sum(axis=0).astype(np.float64)  # predicted pixels per class
    total = float(support.sum())
    present = (support + predicted) > 0

    union = support + predicted - tp
    iou = _ratio(tp, union)
    acc = _ratio(tp, support)
    dice = _ratio(2 * tp, support + predicted)
    # scikit-learn semantics over present classes: an undefined ratio counts as 0.
    precision = np.where(present, np.nan_to_num(_ratio(tp, predicted)), np.nan)
    recall = np.where(present, np.nan_to_num(_ratio(tp, support)), np.nan)
    f1 = np.where(present, np.nan_to_num(_ratio(2 * tp, support + predicted)), np.nan)

    freq = support / total if total > 0 else np.zeros_like(support)
    has_truth = support > 0
    pixel_acc = float(tp.sum() / total) if total > 0 else float("nan")
    tp_sum = tp.sum()
    jaccard_micro = float(tp_sum / (2 * total - tp_sum)) if total > 0 else float("nan")

    doc: dict[str, Any] = {
        "miou": _mean(iou, present),
        "pixel_acc": pixel_acc,
        "mean_acc": _mean(acc, has_truth),
        "fw_iou": float(np.sum(freq[has_truth] * iou[has_truth])) if total > 0 else float("nan"),
        "mean_dice": _mean(dice, present),
        "precision_macro": _mean(precision, present),
        "recall_macro": _mean(recall, present),
        "f1_macro": _mean(f1, present),
        # Single-label pixels: micro precision = micro recall = micro F1 = pixel accuracy.
        "precision_micro": pixel_acc,
        "recall_micro": pixel_acc,
        "f1_micro": pixel_acc,
        "precision_weighted": float(np.sum(freq[has_truth] * precision[has_truth]))
        if total > 0
        else float("nan"),
        "recall_weighted": float(np.sum(freq[has_truth] * recall[has_truth]))
        if total > 0
        else float("nan"),
        "f1_weighted": float(np.sum(freq[has_truth] * f1[has_truth]))
        if total > 0
        else float("nan"),
        "jaccard_macro": _mean(iou, present),
        "jaccard_micro": jaccard_micro,
        "num_classes": num_classes,
        "num_pixels": int(total),
        "classes_excluded_from_mean": [n for n, p in zip(names, present, strict=True) if not p],
        "per_class": {
            name: {
                "iou": float(iou[i]),
                "acc": float(acc[i]),
                "dice": float(dice[i]),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
    }
    if include_confusion:
        doc["confusion"] = {
            "labels": names,
            "counts": cm.tolist(),
            **{f"by_{mode}": normalize_confusion(cm, mode).tolist() for mode in NORMALIZE_MODES},
        }
    return doc
