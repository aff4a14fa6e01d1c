"""The metric keys other modules spell: each written once, here.

A validation score is logged, checkpointed on and written to ``history.csv`` as ``val_<key>``
(``val_miou``); :func:`val_key` is the one place that name is made.
"""

from __future__ import annotations

MIOU = "miou"
PIXEL_ACC = "pixel_acc"
MEAN_ACC = "mean_acc"
VAL_PREFIX = "val_"


def val_key(key: str) -> str:
    """The name of score ``key`` measured on the validation split (``miou`` -> ``val_miou``)."""
    return VAL_PREFIX + key


VAL_MIOU = val_key(MIOU)
VAL_PIXEL_ACC = val_key(PIXEL_ACC)
VAL_LOSS = val_key("loss")
BEST_VAL_MIOU = "best_" + VAL_MIOU  # the best epoch's val mIoU, in a training's metrics.json
