"""Bootstrap intervals: the vectorised resampling equals a plain loop that recomputes every
score from the masks of the images drawn, for the same resample indices."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from seglab.bootstrap import (
    bootstrap_scores,
    confidence_intervals,
    percentile_interval,
    resample_indices,
)
from seglab.boundary import boundary_rows
from seglab.metrics import metrics_from_confusion
from seglab.metrics.boundary import boundary_scores
from seglab.metrics.confusion import confusion_matrix
from seglab.per_image import PerImageCounts, image_rows

C, IGNORE = 4, 255
NAMES = ["sky", "road", "car", "pole"]


def _masks(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky truths (one rare class, some void) and noisy predictions."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 3, (n, 6, 8), generator=g)
    truth = coarse.repeat_interleave(5, 1).repeat_interleave(5, 2)
    truth[0, 10:14, 10:14] = 3  # "pole" in one image only
    truth[:, 0, :7] = IGNORE
    pred = torch.where(torch.rand(truth.shape, generator=g) < 0.25,
                       torch.randint(0, C - 1, truth.shape, generator=g), truth)
    pred[pred == IGNORE] = 0
    return pred, truth


def _counts(pred: torch.Tensor, truth: torch.Tensor) -> PerImageCounts:
    return PerImageCounts.from_rows(
        [f"img{i}" for i in range(len(pred))], NAMES, image_rows(pred, truth, C, IGNORE).numpy(),
        boundary_rows(pred, truth, C, IGNORE).numpy(),
    )


def test_vectorised_bootstrap_equals_a_python_loop_over_the_masks() -> None:
    pred, truth = _masks()
    counts = _counts(pred, truth)
    indices = resample_indices(len(pred), resamples=40, seed=7)
    fast = bootstrap_scores(counts, indices)
    for r, drawn in enumerate(indices):
        drawn_t = torch.as_tensor(drawn)
        cm = confusion_matrix(pred[drawn_t], truth[drawn_t], C, IGNORE).numpy()
        slow = metrics_from_confusion(cm, NAMES, include_confusion=False)
        assert abs(fast["miou"][r] - slow["miou"]) < 1e-9
        assert abs(fast["pixel_acc"][r] - slow["pixel_acc"]) < 1e-9
        assert abs(fast["mean_dice"][r] - slow["mean_dice"]) < 1e-9
        for j, name in enumerate(NAMES):
            expected = slow["per_class"][name]["iou"]
            if np.isnan(expected):
                assert np.isnan(fast["iou"][r, j])
            else:
                assert abs(fast["iou"][r, j] - expected) < 1e-9
        edges = boundary_scores(
            boundary_rows(pred[drawn_t], truth[drawn_t], C, IGNORE).numpy(), NAMES
        )
        assert abs(fast["boundary_miou"][r] - edges["boundary_miou"]) < 1e-9
        assert abs(fast["mean_bf"][r] - edges["mean_bf"]) < 1e-9
    # Some resamples miss the rare class: its IoU is undefined there, not zero.
    missed = ~(indices == 0).any(1)
    assert missed.any() and np.isnan(fast["iou"][missed, 3]).all()


def test_intervals_are_the_percentiles_of_the_resampled_scores() -> None:
    pred, truth = _masks()
    counts = _counts(pred, truth)
    doc = confidence_intervals(counts, level=0.9, resamples=300, seed=1)
    scores = bootstrap_scores(counts, resample_indices(len(pred), 300, 1))
    np.testing.assert_allclose(doc["miou"], np.quantile(scores["miou"], [0.05, 0.95]))
    point = metrics_from_confusion(counts.dataset_confusion(), NAMES)["miou"]
    assert doc["miou"][0] < point < doc["miou"][1]
    assert doc["level"] == 0.9 and doc["resamples"] == 300
    assert set(doc["per_class"]["pole"]) == {"iou", "boundary_iou", "bf"}
    # A wider level gives a wider interval; the same seed gives the same interval.
    wide = confidence_intervals(counts, level=0.99, resamples=300, seed=1)
    assert wide["miou"][0] <= doc["miou"][0] and wide["miou"][1] >= doc["miou"][1]
    assert confidence_intervals(counts, level=0.9, resamples=300, seed=1) == doc
    with pytest.raises(ValueError, match="between 0 and 1"):
        confidence_intervals(counts, level=95)


def test_percentile_interval_leaves_out_undefined_resamples() -> None:
    values = np.array([[1.0, np.nan], [2.0, 5.0], [3.0, np.nan], [4.0, 7.0]])
    out = percentile_interval(values, 0.5)
    np.testing.assert_allclose(out[:, 0], np.quantile([1, 2, 3, 4], [0.25, 0.75]))
    np.testing.assert_allclose(out[:, 1], np.quantile([5, 7], [0.25, 0.75]))


def test_camvid_sized_bootstrap_is_fast() -> None:
    # 233 images x 11 classes (CamVid-11 test), 1,000 resamples: vectorised, well under 1 s
    # on an idle core; the bound is loose because the test machines are shared.
    rng = np.random.default_rng(0)
    truth = rng.integers(1000, 20000, size=(233, 11))
    tp = (truth * rng.uniform(0.3, 0.95, size=truth.shape)).astype(np.int64)
    pred = tp + rng.integers(0, 3000, size=truth.shape)
    counts = PerImageCounts([str(i) for i in range(233)], [str(j) for j in range(11)],
                            tp, truth, pred)
    started = time.perf_counter()
    doc = confidence_intervals(counts, resamples=1000)
    assert time.perf_counter() - started < 3.0
    assert doc["miou"][0] < doc["miou"][1]
