"""Per-class counts and ratios of one confusion matrix, computed once for every metric.

Conventions (rows = truth, columns = prediction; pixels whose truth is ``ignore_index`` are
not counted):

- A class is *present* when it occurs in the truth or in the prediction. Classes absent from
  both have no defined IoU/Dice; they are left out of every mean.
- ``acc`` (per-class accuracy, mAcc) is ``tp / truth pixels``, undefined (NaN) for a class with
  no truth pixels, as in mmsegmentation.
- precision/recall/F1 follow scikit-learn over the present classes with ``zero_division=0``:
  a present class that is never predicted has precision 0; one that never occurs in the truth
  has recall 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` with NaN where ``den == 0``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


@dataclass(frozen=True)
class ClassCounts:
    """What a metric of the confusion matrix reads: counts and ratios per class ``[C]``."""

    confusion: np.ndarray  # [C, C] int64
    tp: np.ndarray
    truth: np.ndarray  # truth pixels per class (support)
    pred: np.ndarray  # predicted pixels per class
    total: float
    present: np.ndarray  # in the truth or the prediction
    has_truth: np.ndarray
    iou: np.ndarray
    acc: np.ndarray
    dice: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    freq: np.ndarray  # share of the truth pixels per class

    @classmethod
    def from_confusion(cls, cm: np.ndarray) -> ClassCounts:
        """The counts of a square int64 confusion matrix."""
        tp = np.diag(cm).astype(np.float64)
        truth = cm.sum(axis=1).astype(np.float64)
        pred = cm.sum(axis=0).astype(np.float64)
        total = float(truth.sum())
        present = (truth + pred) > 0
        # scikit-learn semantics over present classes: an undefined ratio counts as 0.
        def over_present(values: np.ndarray) -> np.ndarray:
            return np.where(present, np.nan_to_num(values), np.nan)

        return cls(
            confusion=cm, tp=tp, truth=truth, pred=pred, total=total, present=present,
            has_truth=truth > 0, iou=ratio(tp, truth + pred - tp), acc=ratio(tp, truth),
            dice=ratio(2 * tp, truth + pred), precision=over_present(ratio(tp, pred)),
            recall=over_present(ratio(tp, truth)), f1=over_present(ratio(2 * tp, truth + pred)),
            freq=truth / total if total > 0 else np.zeros_like(truth),
        )

    def mean(self, values: np.ndarray, over: np.ndarray | None = None) -> float:
        """Mean of ``values`` over the present classes (or the mask ``over``); NaN if none."""
        chosen = values[self.present if over is None else over]
        return float(np.mean(chosen)) if chosen.size else float("nan")

    def weighted(self, values: np.ndarray) -> float:
        """Sum of ``values`` weighted by each class's share of the truth pixels."""
        if self.total <= 0:
            return float("nan")
        return float(np.sum(self.freq[self.has_truth] * values[self.has_truth]))
