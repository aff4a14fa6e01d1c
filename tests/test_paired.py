"""Paired comparison: bootstrap interval and p-value of a difference in mIoU, the permutation
check, the ranking groups, and refusal of models scored on different images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.errors import DataError
from seglab.metrics import metrics_from_confusion
from seglab.paired import PairedResult, paired_difference, rank_groups, significance_table
from seglab.per_image import PerImageCounts, image_rows

C = 3
NAMES = ["a", "b", "c"]


def _model(truth: torch.Tensor, error: float, seed: int) -> PerImageCounts:
    g = torch.Generator().manual_seed(seed)
    wrong = torch.rand(truth.shape, generator=g) < error
    pred = torch.where(wrong, torch.randint(0, C, truth.shape, generator=g), truth)
    return PerImageCounts.from_rows([f"i{k}" for k in range(len(truth))], NAMES,
                                    image_rows(pred, truth, C).numpy())


@pytest.fixture(scope="module")
def truth() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, C, (40, 4, 5), generator=g).repeat_interleave(4, 1).repeat_interleave(
        4, 2)


def test_a_clear_difference_is_significant_and_antisymmetric(truth) -> None:
    good, bad = _model(truth, 0.1, 1), _model(truth, 0.5, 2)
    result = paired_difference(good, bad, ("good", "bad"), resamples=500)
    point = [metrics_from_confusion(m.dataset_confusion(), NAMES)["miou"] for m in (good, bad)]
    assert result.difference == pytest.approx(point[0] - point[1], abs=1e-12)
    assert result.significant and result.interval[0] > 0
    assert result.p_bootstrap < 0.01 and result.p_permutation < 0.01
    assert result.text().startswith("good - bad = +") and "significant (p" in result.text()
    if result.p_bootstrap == 0:  # no resample crossed zero: p is below the resolution
        assert result.text().endswith("significant (p < 0.002)")
    reverse = paired_difference(bad, good, ("bad", "good"), resamples=500)
    assert reverse.difference == pytest.approx(-result.difference)
    assert reverse.interval[1] == pytest.approx(-result.interval[0])


def test_identical_and_near_identical_models_are_not_distinguished(truth) -> None:
    model = _model(truth, 0.3, 1)
    same = paired_difference(model, model, resamples=200)
    assert same.difference == 0 and same.interval == (0.0, 0.0)
    assert not same.significant and same.p_permutation == 1.0
    twin = _model(truth, 0.3, 5)  # same error rate, other noise
    close = paired_difference(model, twin, resamples=500)
    assert not close.significant and close.p_permutation > 0.05
    assert "not significant" in close.text()


def test_permutation_p_value_equals_a_loop_over_swapped_confusion_matrices(truth) -> None:
    a, b = _model(truth, 0.25, 1), _model(truth, 0.3, 2)
    result = paired_difference(a, b, resamples=50, permutations=60, seed=4)
    swaps = np.random.default_rng(4 + 1).integers(0, 2, size=(60, a.num_images))
    observed = abs(result.difference)
    extreme = 0
    for swap in swaps:  # image i's two predictions trade places where swap[i] == 1
        first = np.where(swap[:, None, None] == 1, b.confusion, a.confusion).sum(0)
        second = np.where(swap[:, None, None] == 1, a.confusion, b.confusion).sum(0)
        diff = (metrics_from_confusion(first, NAMES)["miou"]
                - metrics_from_confusion(second, NAMES)["miou"])
        extreme += abs(diff) >= observed - 1e-12
    assert result.p_permutation == pytest.approx((1 + extreme) / 61, abs=1e-12)


def test_images_are_aligned_by_name_and_different_sets_refused(truth) -> None:
    a, b = _model(truth, 0.1, 1), _model(truth, 0.4, 2)
    order = np.arange(a.num_images)[::-1]
    shuffled = b.select(order)
    np.testing.assert_allclose(
        paired_difference(a, shuffled, resamples=100).interval,
        paired_difference(a, b, resamples=100).interval,
    )
    fewer = b.select(np.arange(10))
    with pytest.raises(DataError, match="not scored on the same images"):
        paired_difference(a, fewer, ("A", "B"))


def test_rank_groups_and_table(truth) -> None:
    pairs = [
        PairedResult("x", "y", 0.01, (-0.01, 0.03), 0.4, 0.4, 0.95),
        PairedResult("x", "z", 0.10, (0.05, 0.15), 0.0, 0.001, 0.95),
        PairedResult("y", "z", 0.09, (0.04, 0.14), 0.0, 0.001, 0.95),
    ]
    assert rank_groups({"x": 0.6, "y": 0.59, "z": 0.5}, pairs) == [["x", "y"], ["z"]]
    table = significance_table({"noisy": _model(truth, 0.5, 2), "clean": _model(truth, 0.1, 1),
                                "clean2": _model(truth, 0.1, 3)}, resamples=300)
    assert table["groups"][-1] == ["noisy"] and len(table["pairs"]) == 3
    assert set(table["groups"][0]) == {"clean", "clean2"}
    assert table["ranking"].endswith("> noisy")
    assert all(p["difference"] >= 0 for p in table["pairs"])  # better model first


def test_a_real_but_negligible_difference_is_ranked_as_equal(truth) -> None:
    """Two exports of one network flip a few pixels the same way on every image: the interval
    excludes zero, yet the models are not ranked apart (the PyTorch vs ONNX case)."""
    model = _model(truth.repeat_interleave(4, 1).repeat_interleave(4, 2), 0.3, 1)  # 64x80
    tp = model.tp.copy()
    tp[:, 0] = np.maximum(tp[:, 0] - 1, 0)  # one fewer correct pixel of class 0 per image
    pred = model.pred.copy()
    pred[:, 1] += model.tp[:, 0] - tp[:, 0]  # which the twin calls class 1
    twin = PerImageCounts(model.images, model.names, tp, model.truth, pred)
    result = paired_difference(model, twin, ("torch", "onnx"), resamples=500)
    assert result.excludes_zero and 0 < result.difference < result.margin
    assert not result.significant and result.verdict == "negligible"
    assert "real but negligible (+" in result.text()
    assert "points, under 0.1): counted as equal" in result.text()
    table = significance_table({"torch": model, "onnx": twin}, resamples=300)
    assert table["groups"] == [["torch", "onnx"]] and table["ranking"] == "{torch, onnx}"
    assert table["pairs"][0]["verdict"] == "negligible" and table["margin"] == 0.001
    strict = paired_difference(model, twin, ("torch", "onnx"), resamples=500, margin=0.0)
    assert strict.significant and strict.verdict == "significant"
