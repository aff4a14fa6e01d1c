"""Focal loss (``focal``, Lin et al. 2017): cross-entropy that down-weights easy pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch
from torch import nn

from seglab.loss_options import FocalOptions, FocalReduction
from seglab.losses.common import check_shapes, upcast, zero_like_graph
from seglab.losses.registry import register_loss

FOCAL_REDUCTIONS: tuple[str, ...] = get_args(FocalReduction)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log p_t`` over valid pixels.

    ``alpha`` is None (no weighting), one number (a constant factor) or one weight per class.
    With per-class weights, ``reduction="weighted"`` (default) divides the sum by the sum of the
    valid pixels' weights ``sum alpha_t``, as :func:`torch.nn.functional.cross_entropy` does
    with ``weight=``: ``gamma=0`` then gives exactly the weighted cross-entropy.
    ``reduction="mean"`` divides by the number of valid pixels (a plain mean of the weighted
    terms). A single number multiplies the mean in both cases. ``gamma=0`` and
    ``alpha=None`` give plain cross-entropy.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = 255,
        reduction: str = "weighted",
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        if reduction not in FOCAL_REDUCTIONS:
            raise ValueError(
                f"focal reduction must be one of {', '.join(FOCAL_REDUCTIONS)}, got {reduction!r}"
            )
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.reduction = reduction
        alpha_t = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        self.register_buffer("alpha", alpha_t)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_shapes(logits, target, self.alpha, "loss.focal_alpha")
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return zero_like_graph(logits)
        log_probs = upcast(logits).log_softmax(dim=1)
        safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
        log_pt = log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)[valid]
        pt = log_pt.exp()
        loss = -((1 - pt).clamp(min=0) ** self.gamma) * log_pt
        if self.alpha is None:
            return loss.mean()
        alpha = self.alpha.to(loss.dtype)
        if alpha.dim() == 0:
            return alpha * loss.mean()
        alpha_t = alpha[safe_target[valid]]
        if self.reduction == "mean":
            return (alpha_t * loss).mean()
        return (alpha_t * loss).sum() / alpha_t.sum()


@register_loss("focal", options=FocalOptions)
def build_focal(options: FocalOptions, *, ignore_index: int,
                class_weights: torch.Tensor | None) -> nn.Module:
    """:class:`FocalLoss`; the class weights are its alpha unless ``focal_alpha`` is set."""
    alpha = options.focal_alpha
    return FocalLoss(gamma=options.focal_gamma,
                     alpha=class_weights if alpha is None else alpha,
                     ignore_index=ignore_index, reduction=options.focal_reduction)
