"""Lovasz-softmax loss (``lovasz``, Berman et al. 2018), a convex surrogate of 1 - IoU."""

from __future__ import annotations

import torch
from torch import nn

from seglab.loss_options import LossOptions
from seglab.losses.common import SoftmaxLoss
from seglab.losses.registry import register_loss


def _lovasz_gradient(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss for errors sorted descending."""
    positives = sorted_truth.sum()
    intersection = positives - sorted_truth.cumsum(0)
    union = positives + (1 - sorted_truth).cumsum(0)
    jaccard = 1.0 - intersection / union
    # The gradient is the increment of the Jaccard loss as each pixel joins the error set.
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


class LovaszSoftmaxLoss(SoftmaxLoss):
    """Lovasz-softmax loss (Berman et al. 2018), a convex surrogate of 1 - IoU.

    Averaged over the classes present in the batch's truth (``classes="present"``) or over all
    classes (``classes="all"``); computed over all valid pixels of the batch.
    """

    def __init__(self, ignore_index: int = 255, classes: str = "present") -> None:
        super().__init__(ignore_index)
        if classes not in ("present", "all"):
            raise ValueError(f"lovasz classes must be 'present' or 'all', got {classes!r}")
        self.classes = classes

    def of_probs(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor | None:
        losses = []
        for c in range(probs.shape[1]):
            truth = onehot[:, c]
            if self.classes == "present" and not bool(truth.any()):
                continue
            errors = (truth - probs[:, c]).abs()
            errors_sorted, order = errors.sort(descending=True)
            losses.append(torch.dot(errors_sorted, _lovasz_gradient(truth[order])))
        return torch.stack(losses).mean() if losses else None


@register_loss("lovasz")
def build_lovasz(options: LossOptions, *, ignore_index: int,
                 class_weights: torch.Tensor | None) -> nn.Module:
    """:class:`LovaszSoftmaxLoss` over the classes present in each batch."""
    return LovaszSoftmaxLoss(ignore_index=ignore_index)
