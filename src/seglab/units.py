"""One unit convention for scores: what a person reads is a percentage, files hold fractions.

mIoU, IoU, accuracies, Dice and F1 print as percentages (``52.31%``) on the console, in the
progress bar, the epoch lines and the reports; ``metrics.json``, ``history.csv`` and
``results.json`` keep fractions in [0, 1] under the same keys, as torchmetrics and mmseg do.
"""

from __future__ import annotations

import math
from typing import Any

# A metric name whose last word is one of these is a fraction in [0, 1] (val_miou, pixel_acc,
# mean_dice, f1_macro, ...).
FRACTION_WORDS = frozenset({"miou", "iou", "acc", "accuracy", "dice", "f1", "fwiou"})


def is_fraction_metric(name: str) -> bool:
    """Whether ``name`` (``val_miou``, ``test_pixel_acc``, ``f1_macro``...) is a score in [0, 1]."""
    words = str(name).lower().replace("-", "_").split("_")
    return any(word in FRACTION_WORDS for word in words)


def score_text(name: str, value: Any, digits: int = 2) -> str:
    """``value`` as a person reads it: ``52.31%`` for a fraction metric, else 4 significant
    digits; ``-`` for a missing or non-finite value."""
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    if not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return "-"
    if is_fraction_metric(name):
        return f"{100 * value:.{digits}f}%"
    return f"{value:.4g}"
