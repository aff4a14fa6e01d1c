"""Metric correctness against independent computations (numpy loops, scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import jaccard_score, precision_recall_fscore_support

from seglab.metrics import metrics_from_confusion, normalize_confusion
from seglab.metrics.confusion import SegMetric, confusion_matrix

IGNORE = 255


def _random_case(seed: int):
    """Random 7-class labels/preds with ~10% ignore pixels.

    Class 4 is absent from truth and prediction, class 5 occurs in the truth but is never
    predicted, class 6 is predicted but never occurs in the truth.
    """
    gen = np.random.default_rng(seed)
    target = gen.choice([0, 1, 2, 3, 5], size=(3, 17, 23))
    noise = gen.choice([0, 1, 2, 3, 6], size=target.shape)
    agree = (gen.random(target.shape) < 0.6) & (target != 5)
    preds = np.where(agree, target, noise)
    target = np.where(gen.random(target.shape) < 0.1, IGNORE, target)
    return preds, target


def _loop_scores(preds: np.ndarray, target: np.ndarray, num_classes: int) -> dict:
    """Per-class IoU/acc by plain Python loops over pixels (the independent reference)."""
    tp = [0] * num_classes
    fp = [0] * num_classes
    fn = [0] * num_classes
    for p, t in zip(preds.ravel().tolist(), target.ravel().tolist(), strict=True):
        if t == IGNORE:
            continue
        if p == t:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    iou, acc = [], []
    for c in range(num_classes):
        union = tp[c] + fp[c] + fn[c]
        iou.append(tp[c] / union if union else math.nan)
        acc.append(tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else math.nan)
    valid = sum(tp) + sum(fn)
    support = [t + f for t, f in zip(tp, fn, strict=True)]
    return {"iou": iou, "acc": acc, "pixel_acc": sum(tp) / valid, "support": support}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matches_sklearn(seed: int) -> None:
    preds, target = _random_case(seed)
    cm = confusion_matrix(torch.from_numpy(preds), torch.from_numpy(target), 7, IGNORE).numpy()
    keep = target != IGNORE
    expected = sk_confusion_matrix(target[keep], preds[keep], labels=list(range(7)))
    np.testing.assert_array_equal(cm, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_loops_and_sklearn(seed: int) -> None:
    preds, target = _random_case(seed)
    cm = confusion_matrix(torch.from_numpy(preds), torch.from_numpy(target), 7, IGNORE).numpy()
    names = [f"c{i}" for i in range(7)]
    doc = metrics_from_confusion(cm, names)
    ref = _loop_scores(preds, target, 7)

    got_iou = [doc["per_class"][n]["iou"] for n in names]
    np.testing.assert_allclose(got_iou, ref["iou"], equal_nan=True)
    assert math.isnan(got_iou[4])  # class 4 is absent from truth and prediction
    assert doc["classes_excluded_from_mean"] == ["c4"]
    assert doc["miou"] == pytest.approx(np.nanmean(ref["iou"]))
    assert doc["mean_acc"] == pytest.approx(np.nanmean(ref["acc"]))
    assert doc["pixel_acc"] == pytest.approx(ref["pixel_acc"])
    assert [doc["per_class"][n]["support"] for n in names] == ref["support"]
    freq = np.array(ref["support"]) / sum(ref["support"])
    assert doc["fw_iou"] == pytest.approx(np.nansum(freq * np.array(ref["iou"])))

    keep = target != IGNORE
    y_true, y_pred = target[keep], preds[keep]
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        if average != "weighted":
            assert doc[f"precision_{average}"] == pytest.approx(p)
            assert doc[f"recall_{average}"] == pytest.approx(r)
        assert doc[f"f1_{average}"] == pytest.approx(f)
    assert doc["precision_weighted"] == pytest.approx(
        precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)[0]
    )
    assert doc["jaccard_macro"] == pytest.approx(
        jaccard_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert doc["jaccard_micro"] == pytest.approx(jaccard_score(y_true, y_pred, average="micro"))
    # Per-class Dice equals per-class F1 wherever both are defined.
    for n in names:
        d, f1 = doc["per_class"][n]["dice"], doc["per_class"][n]["f1"]
        assert math.isnan(d) or d == pytest.approx(f1)


def test_hand_worked_three_class_example() -> None:
    # truth \ pred:   0  1  2
    cm = np.array([[3, 1, 0],   # class 0: 4 pixels, 3 right
                   [0, 2, 2],   # class 1: 4 pixels, 2 right
                   [0, 0, 0]])  # class 2: never in truth, predicted twice
    doc = metrics_from_confusion(cm, ["a", "b", "c"])
    # IoU a = 3 / (4 + 3 - 3) = 3/4; b = 2 / (4 + 3 - 2) = 2/5; c = 0 / (0 + 2 - 0) = 0.
    assert doc["per_class"]["a"]["iou"] == pytest.approx(0.75)
    assert doc["per_class"]["b"]["iou"] == pytest.approx(0.4)
    assert doc["per_class"]["c"]["iou"] == pytest.approx(0.0)
    assert doc["miou"] == pytest.approx((0.75 + 0.4 + 0.0) / 3)
    assert doc["classes_excluded_from_mean"] == []
    assert doc["pixel_acc"] == pytest.approx(5 / 8)
    # acc: a 3/4, b 2/4, c undefined (no truth pixels) -> left out of mAcc.
    assert math.isnan(doc["per_class"]["c"]["acc"])
    assert doc["mean_acc"] == pytest.approx((0.75 + 0.5) / 2)
    # Dice a = 6/7, b = 4/7, c = 0.
    assert doc["per_class"]["a"]["dice"] == pytest.approx(6 / 7)
    assert doc["mean_dice"] == pytest.approx((6 / 7 + 4 / 7 + 0) / 3)
    # precision a = 3/3, b = 2/3, c = 0/2; recall c counts 0 (never in truth).
    assert doc["precision_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert doc["recall_macro"] == pytest.approx((0.75 + 0.5 + 0) / 3)
    assert doc["fw_iou"] == pytest.approx(0.5 * 0.75 + 0.5 * 0.4)
    assert doc["jaccard_micro"] == pytest.approx(5 / (5 + 3 + 3))
    by_truth = np.array(doc["confusion"]["by_truth"])
    np.testing.assert_allclose(by_truth, [[0.75, 0.25, 0], [0, 0.5, 0.5], [0, 0, 0]])
    by_pred = np.array(doc["confusion"]["by_pred"])
    np.testing.assert_allclose(by_pred, [[1, 1 / 3, 0], [0, 2 / 3, 1], [0, 0, 0]])
    np.testing.assert_allclose(np.array(doc["confusion"]["by_all"]).sum(), 1.0)


def test_absent_class_is_excluded_and_listed() -> None:
    cm = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 4]])
    doc = metrics_from_confusion(cm, ["x", "y", "z"])
    assert doc["classes_excluded_from_mean"] == ["y"]
    assert doc["miou"] == pytest.approx((5 / 6 + 4 / 5) / 2)


def test_merging_partial_matrices_equals_one_pass() -> None:
    preds, target = _random_case(7)
    p, t = torch.from_numpy(preds), torch.from_numpy(target)
    whole = SegMetric(7, IGNORE)
    whole.update(p, t)
    # Two "processes" each see part of the data; DDP sums their states.
    part_a, part_b = SegMetric(7, IGNORE), SegMetric(7, IGNORE)
    part_a.update(p[:1], t[:1])
    part_b.update(p[1:], t[1:])
    merged = part_a.compute() + part_b.compute()
    torch.testing.assert_close(merged, whole.compute())

    # The DDP path: torchmetrics gathers every process's state and applies the state's
    # reduction (sum). A fake gather stands in for torch.distributed.all_gather.
    rank0, rank1 = SegMetric(7, IGNORE), SegMetric(7, IGNORE)
    rank0.update(p[:1], t[:1])
    rank1.update(p[1:], t[1:])
    other = rank1.confmat.clone()
    rank0.sync(dist_sync_fn=lambda tensor, group=None: [tensor, other],
               distributed_available=lambda: True)
    torch.testing.assert_close(rank0.confmat, whole.confmat)


def test_metric_accepts_logits_and_ignores_void() -> None:
    target = torch.tensor([[[0, 1], [2, IGNORE]]])
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0, 0, 0] = logits[0, 1, 0, 1] = logits[0, 1, 1, 0] = logits[0, 2, 1, 1] = 5.0
    metric = SegMetric(3, IGNORE, names=["a", "b", "c"])
    metric.update(logits, target)
    cm = metric.compute()
    assert int(cm.sum()) == 3  # the void pixel is not counted
    assert metric.scores()["per_class"]["c"]["recall"] == 0.0
    metric.reset()
    assert int(metric.confmat.sum()) == 0


def test_bad_labels_and_shapes_are_reported() -> None:
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7), 3)
    with pytest.raises(ValueError, match="upsample"):
        confusion_matrix(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 2, dtype=torch.long), 3)


def test_normalize_confusion_modes() -> None:
    cm = np.array([[2, 2], [0, 0]])
    np.testing.assert_allclose(normalize_confusion(cm, "truth"), [[0.5, 0.5], [0, 0]])
    np.testing.assert_allclose(normalize_confusion(cm, "pred"), [[1, 1], [0, 0]])
    np.testing.assert_allclose(normalize_confusion(cm, "all"), [[0.5, 0.5], [0, 0]])
    with pytest.raises(ValueError):
        normalize_confusion(cm, "rows")


def test_segmetric_takes_a_confusion_matrix_counted_elsewhere() -> None:
    """Evaluation counts each image's matrix once and adds the batch's sum through update."""
    metric = SegMetric(3)
    preds, target = torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 1, 255]])
    metric.update(confusion=confusion_matrix(preds, target, 3))
    direct = SegMetric(3)
    direct.update(preds, target)
    assert torch.equal(metric.compute(), direct.compute())
    with pytest.raises(ValueError, match="preds and target, or confusion"):
        metric.update(preds)
