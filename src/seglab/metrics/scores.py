"""The scores of one confusion matrix (:class:`~seglab.metrics.counts.ClassCounts`),
registered in the order ``metrics.json`` lists them."""

from __future__ import annotations

from seglab.metrics.counts import ClassCounts
from seglab.metrics.keys import MEAN_ACC, MIOU, PIXEL_ACC
from seglab.metrics.registry import register_metric

SUMMARY = ("console", "report", "folds", "objective")
NOT_REPORTED = ("console", "folds", "objective")
OBJECTIVE = ("objective",)


@register_metric(MIOU, "mIoU", shown_in=SUMMARY)
def miou(c: ClassCounts) -> float:
    return c.mean(c.iou)


@register_metric(PIXEL_ACC, "Pixel acc", short="pixel acc", shown_in=SUMMARY)
def pixel_acc(c: ClassCounts) -> float:
    return float(c.tp.sum() / c.total) if c.total > 0 else float("nan")


@register_metric(MEAN_ACC, "mAcc", shown_in=SUMMARY)
def mean_acc(c: ClassCounts) -> float:
    return c.mean(c.acc, c.has_truth)


@register_metric("fw_iou", "fwIoU", shown_in=NOT_REPORTED)
def fw_iou(c: ClassCounts) -> float:
    return c.weighted(c.iou)


@register_metric("mean_dice", "mean Dice", short="mDice", shown_in=SUMMARY)
def mean_dice(c: ClassCounts) -> float:
    return c.mean(c.dice)


@register_metric("precision_macro", "macro precision", shown_in=OBJECTIVE)
def precision_macro(c: ClassCounts) -> float:
    return c.mean(c.precision)


@register_metric("recall_macro", "macro recall", shown_in=OBJECTIVE)
def recall_macro(c: ClassCounts) -> float:
    return c.mean(c.recall)


@register_metric("f1_macro", "macro F1", short="F1 macro", shown_in=SUMMARY)
def f1_macro(c: ClassCounts) -> float:
    return c.mean(c.f1)


# Single-label pixels: micro precision = micro recall = micro F1 = pixel accuracy.
@register_metric("precision_micro", "micro precision", shown_in=())
def precision_micro(c: ClassCounts) -> float:
    return pixel_acc(c)


@register_metric("recall_micro", "micro recall", shown_in=())
def recall_micro(c: ClassCounts) -> float:
    return pixel_acc(c)


@register_metric("f1_micro", "micro F1", shown_in=OBJECTIVE)
def f1_micro(c: ClassCounts) -> float:
    return pixel_acc(c)


@register_metric("precision_weighted", "weighted precision", shown_in=())
def precision_weighted(c: ClassCounts) -> float:
    return c.weighted(c.precision)


@register_metric("recall_weighted", "weighted recall", shown_in=())
def recall_weighted(c: ClassCounts) -> float:
    return c.weighted(c.recall)


@register_metric("f1_weighted", "weighted F1", shown_in=OBJECTIVE)
def f1_weighted(c: ClassCounts) -> float:
    return c.weighted(c.f1)


@register_metric("jaccard_macro", "macro Jaccard", shown_in=OBJECTIVE)
def jaccard_macro(c: ClassCounts) -> float:
    return c.mean(c.iou)


@register_metric("jaccard_micro", "micro Jaccard", shown_in=("folds", "objective"))
def jaccard_micro(c: ClassCounts) -> float:
    tp = c.tp.sum()
    return float(tp / (2 * c.total - tp)) if c.total > 0 else float("nan")
