"""Overlap losses: soft Dice (``dice``) and generalized Dice (``generalized_dice``, Sudre et
al. 2017), both over all valid pixels of the batch at once."""

from __future__ import annotations

import torch
from torch import nn

from seglab.loss_options import DiceOptions, LossOptions
from seglab.losses.common import SoftmaxLoss
from seglab.losses.registry import register_loss


class DiceLoss(SoftmaxLoss):
    """Soft Dice loss: ``1 - mean_c (2 sum p g + s) / (sum p + sum g + s)`` over the batch.

    Computed over all valid pixels of the batch at once; ``smooth`` keeps classes absent from
    both truth and prediction at a Dice near 1 instead of 0/0.
    """

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0) -> None:
        super().__init__(ignore_index)
        self.smooth = smooth

    def of_probs(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        inter = (probs * onehot).sum(0)
        total = probs.sum(0) + onehot.sum(0)
        dice = (2 * inter + self.smooth) / (total + self.smooth)
        return 1 - dice.mean()


class GeneralizedDiceLoss(SoftmaxLoss):
    """Generalized Dice loss (Sudre et al. 2017) with class weights ``1 / (sum g_c)^2``.

    A class with no truth pixels in the batch would get an infinite weight; it gets the largest
    finite weight instead, so predicting it where it is absent is still penalised.
    """

    def __init__(self, ignore_index: int = 255, eps: float = 1e-6) -> None:
        super().__init__(ignore_index)
        self.eps = eps

    def of_probs(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        truth = onehot.sum(0)
        weight = torch.where(truth > 0, 1.0 / truth.clamp(min=1) ** 2, torch.zeros_like(truth))
        weight = torch.where(truth > 0, weight, weight.max())
        inter = (weight * (probs * onehot).sum(0)).sum()
        total = (weight * (probs.sum(0) + truth)).sum()
        return 1 - (2 * inter + self.eps) / (total + self.eps)


@register_loss("dice", options=DiceOptions)
def build_dice(options: DiceOptions, *, ignore_index: int,
               class_weights: torch.Tensor | None) -> nn.Module:
    """:class:`DiceLoss` (unweighted: Dice already balances the classes)."""
    return DiceLoss(ignore_index=ignore_index, smooth=options.dice_smooth)


@register_loss("generalized_dice")
def build_generalized_dice(options: LossOptions, *, ignore_index: int,
                           class_weights: torch.Tensor | None) -> nn.Module:
    """:class:`GeneralizedDiceLoss` (its weights come from each batch's truth)."""
    return GeneralizedDiceLoss(ignore_index=ignore_index)
