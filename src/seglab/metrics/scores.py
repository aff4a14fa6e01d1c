"""The scores of one confusion matrix (:class:`~seglab.metrics.counts.ClassCounts`),
registered in the order ``metrics.json`` lists them."""

from __future__ import annotations

from collections.abc import Callable

from seglab.metrics.counts import ClassCounts
from seglab.metrics.keys import MEAN_ACC, MIOU, PIXEL_ACC
from seglab.metrics.registry import register_metric

SUMMARY = ("console", "report", "folds", "objective")
NOT_REPORTED = ("console", "folds", "objective")
OBJECTIVE = ("objective",)


def _macro(ratio: str) -> Callable[[ClassCounts], float]:
    """The mean of a per-class ratio of :class:`ClassCounts` over the present classes."""
    return lambda c: c.mean(getattr(c, ratio))


def _weighted(ratio: str) -> Callable[[ClassCounts], float]:
    """A per-class ratio weighted by each class's share of the truth pixels."""
    return lambda c: c.weighted(getattr(c, ratio))


register_metric(MIOU, "mIoU", shown_in=SUMMARY)(_macro("iou"))


@register_metric(PIXEL_ACC, "Pixel acc", short="pixel acc", shown_in=SUMMARY)
def pixel_acc(c: ClassCounts) -> float:
    return float(c.tp.sum() / c.total) if c.total > 0 else float("nan")


@register_metric(MEAN_ACC, "mAcc", shown_in=SUMMARY)
def mean_acc(c: ClassCounts) -> float:
    return c.mean(c.acc, c.has_truth)  # classes with truth pixels (acc is undefined without)


register_metric("fw_iou", "fwIoU", shown_in=NOT_REPORTED)(_weighted("iou"))
register_metric("mean_dice", "mean Dice", short="mDice", shown_in=SUMMARY)(_macro("dice"))
register_metric("precision_macro", "macro precision", shown_in=OBJECTIVE)(_macro("precision"))
register_metric("recall_macro", "macro recall", shown_in=OBJECTIVE)(_macro("recall"))
register_metric("f1_macro", "macro F1", short="F1 macro", shown_in=SUMMARY)(_macro("f1"))
# Single-label pixels: micro precision = micro recall = micro F1 = pixel accuracy.
register_metric("precision_micro", "micro precision", shown_in=())(pixel_acc)
register_metric("recall_micro", "micro recall", shown_in=())(pixel_acc)
register_metric("f1_micro", "micro F1", shown_in=OBJECTIVE)(pixel_acc)
register_metric("precision_weighted", "weighted precision", shown_in=())(_weighted("precision"))
register_metric("recall_weighted", "weighted recall", shown_in=())(_weighted("recall"))
register_metric("f1_weighted", "weighted F1", shown_in=OBJECTIVE)(_weighted("f1"))
register_metric("jaccard_macro", "macro Jaccard", shown_in=OBJECTIVE)(_macro("iou"))


@register_metric("jaccard_micro", "micro Jaccard", shown_in=("folds", "objective"))
def jaccard_micro(c: ClassCounts) -> float:
    tp = c.tp.sum()
    return float(tp / (2 * c.total - tp)) if c.total > 0 else float("nan")
