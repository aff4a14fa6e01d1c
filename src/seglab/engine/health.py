"""Signs that a finished training learned nothing, said in the log and in ``metrics.json``.

A run can end without an error yet be useless: its loss never left its starting value, or
its model predicts one class everywhere (the mIoU of such a model is still a number, e.g.
the background's IoU over the class count). These checks turn that into a ``warnings`` list
beside the scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

FLAT_EPOCHS = 3  # epochs of unchanged loss before a run is called flat
FLAT_TOLERANCE = 0.01  # relative change of the epoch loss that still counts as unchanged


def flat_loss_warning(history: Sequence[dict[str, Any]]) -> str | None:
    """A warning when every epoch's ``train_loss`` stayed within 1% of the first one for at
    least :data:`FLAT_EPOCHS` epochs (None otherwise)."""
    losses = [float(row.get("train_loss", math.nan)) for row in history]
    losses = [v for v in losses if math.isfinite(v)]
    if len(losses) < FLAT_EPOCHS:
        return None
    start = losses[0]
    if all(abs(v - start) <= FLAT_TOLERANCE * max(abs(start), 1e-12) for v in losses):
        return (f"the training loss stayed at its start value ({start:.4g}) for {len(losses)} "
                "epochs: the model is not learning (check optim.lr, model.freeze and the masks)")
    return None


def one_class_warning(confusion: Any, names: Sequence[str] | None = None) -> str | None:
    """A warning when the labels hold several classes but the predictions only one
    (``confusion``: rows = truth, columns = prediction)."""
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.sum() == 0:
        return None
    truth = np.flatnonzero(matrix.sum(axis=1))
    predicted = np.flatnonzero(matrix.sum(axis=0))
    if len(truth) < 2 or len(predicted) != 1:
        return None
    cls = int(predicted[0])
    label = names[cls] if names is not None and cls < len(names) else str(cls)
    return (f"the model predicts one class ({label!r}) for every pixel while the labels hold "
            f"{len(truth)} classes: its scores measure nothing it learned")
