"""The dataset-level confusion matrix from label maps, and its torchmetrics state.

Every score seglab reports comes from one confusion matrix (:mod:`seglab.metrics`); the matrix
is accumulated by :class:`SegMetric`, a torchmetrics ``Metric`` whose state is summed across
processes, so a distributed evaluation gives exactly the scores of a single pass. Scores are
never averages of per-batch scores. This module alone of the package needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from seglab.class_ids import class_ids
from seglab.metrics.document import metrics_from_confusion


def confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Confusion matrix ``[C, C]`` (int64, rows = truth, columns = prediction).

    ``preds`` are class ids ``[N, H, W]`` or logits/probabilities ``[N, C, H, W]`` (argmax is
    taken); ``target`` holds class ids or ``ignore_index``. Truth values outside
    ``0..C-1`` other than ``ignore_index`` are an error (they would silently corrupt scores).
    """
    if preds.is_floating_point() or preds.dim() == target.dim() + 1:
        preds = class_ids(preds)
    if preds.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(preds.shape)} does not match label shape "
            f"{tuple(target.shape)}: upsample the logits to the label size before scoring"
        )
    target = target.reshape(-1).long()
    preds = preds.reshape(-1).long()
    valid = target != ignore_index
    target, preds = target[valid], preds[valid]
    check_class_ids(target, preds, num_classes, ignore_index)
    flat = target * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def check_class_ids(
    target: torch.Tensor, preds: torch.Tensor, num_classes: int, ignore_index: int
) -> None:
    """Refuse truth or predicted ids outside ``0..C-1`` (ignored pixels already removed)."""
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        bad = target[(target < 0) | (target >= num_classes)].unique()[:5].tolist()
        raise ValueError(
            f"label values {bad} are outside 0..{num_classes - 1} and are not the ignore index "
            f"{ignore_index}"
        )
    if preds.numel() and (int(preds.min()) < 0 or int(preds.max()) >= num_classes):
        raise ValueError(f"predicted class ids must lie in 0..{num_classes - 1}")


class SegMetric(Metric):
    """Dataset-level confusion matrix as torchmetrics state (summed across processes).

    ``update(preds, target)`` accepts logits ``[N, C, H, W]`` or class ids ``[N, H, W]``;
    ``compute()`` returns the int64 confusion matrix; :meth:`scores` turns it into the metrics
    document of :func:`metrics_from_confusion`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.names = list(names) if names is not None else None
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor | None = None, target: torch.Tensor | None = None, *,
               confusion: torch.Tensor | None = None) -> None:
        """Count a batch: predicted and true ids, or a confusion matrix counted elsewhere
        (through ``update``, so torchmetrics knows the metric was updated)."""
        if confusion is None:
            if preds is None or target is None:
                raise ValueError("update takes preds and target, or confusion")
            confusion = confusion_matrix(preds.detach(), target, self.num_classes,
                                         self.ignore_index)
        self.confmat += confusion.to(self.confmat.device)

    def compute(self) -> torch.Tensor:
        return self.confmat.clone()

    def scores(self) -> dict[str, Any]:
        """The full metrics document for the accumulated matrix."""
        return metrics_from_confusion(self.compute().cpu().numpy(), self.names)
