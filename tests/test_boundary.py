"""Boundary IoU and boundary F-score: a case counted by hand, and an independent reference
written here with scipy's distance transforms, one class mask at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.boundary import boundary_rows, pixels_of
from seglab.metrics.boundary import (
    BF_TOLERANCE_RATIO,
    BIOU_DILATION_RATIO,
    boundary_scores,
    image_bf,
)

ndimage = pytest.importorskip("scipy.ndimage")


def test_hand_computed_two_halves() -> None:
    # 6x8 image, truth: columns 0-3 class 0, 4-7 class 1; prediction: the edge one column
    # to the right (columns 0-4 class 0). Ratios chosen so that d = 1 and theta = 1.
    truth = torch.zeros(1, 6, 8, dtype=torch.long)
    truth[..., 4:] = 1
    pred = torch.zeros(1, 6, 8, dtype=torch.long)
    pred[..., 5:] = 1
    rows = boundary_rows(pred, truth, 2, dilation_ratio=0.1, tolerance_ratio=0.1)[0].numpy()
    assert pixels_of(0.1, 6, 8) == 1  # diagonal 10
    # d = 1, image border is contour: a band of width 1 inside each mask, plus the pixels
    # next to the other class. Truth class 0 (cols 0-3): border ring cells + col 3 =
    # rows 0 and 5 (4 each) + rows 1-4 at cols 0 and 3 (2 each) = 16. Class 1 the same: 16.
    # Prediction class 0 (cols 0-4): rows 0,5 (5 each) + rows 1-4 cols 0,4 = 18; class 1
    # (cols 5-7): rows 0,5 (3 each) + rows 1-4 cols 5,7 = 14.
    np.testing.assert_array_equal(rows[1], [16, 16])
    np.testing.assert_array_equal(rows[2], [18, 14])
    # Intersection class 0: truth band and pred band, both class 0: rows 0,5 cols 0-3 (8)
    # + rows 1-4 col 0 (4) = 12 (col 3 is in the truth band only). Class 1: rows 0,5 cols 5-7
    # (6) + rows 1-4 col 7 (4) = 10.
    np.testing.assert_array_equal(rows[0], [12, 10])
    # BF contours (no border): truth class 0 at col 3, class 1 at col 4 (6 pixels each);
    # prediction class 0 at col 4, class 1 at col 5. Within 1 pixel: every contour pixel
    # has a same-class contour of the other map one column away.
    np.testing.assert_array_equal(rows[3:], [[6, 6], [6, 6], [6, 6], [6, 6]])
    scores = boundary_scores(rows[None], ["a", "b"])
    per_class = scores["boundary"]["per_class"]
    assert per_class["a"]["boundary_iou"] == pytest.approx(12 / (16 + 18 - 12))
    assert per_class["b"]["boundary_iou"] == pytest.approx(10 / (16 + 14 - 10))
    assert scores["mean_bf"] == pytest.approx(1.0)
    # With theta forced to 0 no contour pixel coincides: BF is 0 for both classes.
    # (theta >= 1 by construction, so check through the counts directly.)
    shifted = rows.copy()
    shifted[4] = shifted[6] = 0
    assert np.nanmax(image_bf(shifted[None])) == 0.0


def _reference_counts(pred: np.ndarray, truth: np.ndarray, c: int, ignore: int) -> np.ndarray:
    """[7, C] counts for one image from per-class masks and scipy distance transforms."""
    h, w = truth.shape
    d = max(1, int(round(BIOU_DILATION_RATIO * np.hypot(h, w))))
    theta = max(1, int(round(BF_TOLERANCE_RATIO * np.hypot(h, w))))
    valid = truth != ignore
    out = np.zeros((7, c), dtype=np.int64)

    def band(mask: np.ndarray) -> np.ndarray:
        # Chessboard distance to the nearest pixel outside the mask, the outside of the
        # image included (zero padding), as the authors' repeated 3x3 erosion.
        dist = ndimage.distance_transform_cdt(np.pad(mask, 1), metric="chessboard")[1:-1, 1:-1]
        return mask & (dist <= d)

    def contour(mask: np.ndarray) -> np.ndarray:
        eroded = ndimage.binary_erosion(mask, np.ones((3, 3), bool), border_value=1)
        return mask & ~eroded

    def near(target_contour: np.ndarray) -> np.ndarray:
        if not target_contour.any():
            return np.zeros_like(target_contour)
        dist = ndimage.distance_transform_cdt(~target_contour, metric="chessboard")
        return dist <= theta

    for k in range(c):
        tm, pm = truth == k, pred == k
        tb, pb = band(tm) & valid, band(pm) & valid
        out[0, k], out[1, k], out[2, k] = (tb & pb).sum(), tb.sum(), pb.sum()
        tc, pc_all = contour(tm), contour(pm)
        pc = pc_all & valid
        out[3, k], out[4, k] = pc.sum(), (pc & near(tc)).sum()
        out[5, k], out[6, k] = tc.sum(), (tc & near(pc_all)).sum()
    return out


def test_agrees_with_a_scipy_reference_on_random_blobs() -> None:
    rng = np.random.default_rng(3)
    c, ignore = 4, 255
    preds, truths = [], []
    for _ in range(3):
        # Smooth random fields -> blobby label maps, with a void strip in the truth.
        field = ndimage.gaussian_filter(rng.normal(size=(c, 70, 90)), (0, 6, 6))
        truth = field.argmax(0)
        noise = ndimage.gaussian_filter(rng.normal(size=(c, 70, 90)), (0, 4, 4))
        pred = (field + 0.6 * noise).argmax(0)
        truth[30:33, 10:60] = ignore
        preds.append(pred)
        truths.append(truth)
    pred_t = torch.as_tensor(np.stack(preds))
    truth_t = torch.as_tensor(np.stack(truths))
    rows = boundary_rows(pred_t, truth_t, c, ignore).numpy()
    for i in range(3):
        np.testing.assert_array_equal(rows[i], _reference_counts(preds[i], truths[i], c, ignore))
    assert rows[:, 0].sum() > 0 and rows[:, 4].sum() > 0  # not a vacuous agreement


def test_perfect_prediction_scores_one() -> None:
    truth = torch.zeros(2, 40, 50, dtype=torch.long)
    truth[:, 10:25, 5:30] = 1
    truth[1, 20:, 35:] = 2
    rows = boundary_rows(truth.clone(), truth, 3).numpy()
    scores = boundary_scores(rows, ["a", "b", "c"])
    assert scores["boundary_miou"] == pytest.approx(1.0)
    assert scores["mean_bf"] == pytest.approx(1.0)
