"""One unit convention: scores a person reads are percentages; files keep fractions."""

from __future__ import annotations

import math

from seglab.units import is_fraction_metric, score_text


def test_fraction_metrics_print_as_percentages_and_others_do_not() -> None:
    for name in ("miou", "val_miou", "test_pixel_acc", "mean_dice", "f1_macro", "fw_iou"):
        assert is_fraction_metric(name), name
    for name in ("latency_ms", "val_loss", "params", "train_time_s"):
        assert not is_fraction_metric(name), name
    assert score_text("val_miou", 0.52314) == "52.31%"
    assert score_text("latency_ms", 12.3456) == "12.35"
    assert score_text("val_miou", math.nan) == "-" and score_text("val_miou", None) == "-"
