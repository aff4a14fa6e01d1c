"""Cross-entropy (``ce``: class weights, label smoothing) and its online hard example mining
variant (``ohem``: only the hardest pixels count)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seglab.loss_options import CrossEntropyOptions, OhemOptions
from seglab.losses.common import check_shapes, upcast, zero_like_graph
from seglab.losses.registry import register_loss


class CrossEntropy(nn.Module):
    """Pixel-wise cross-entropy with optional class weights and label smoothing.

    With class weights the mean is taken over the weights of the valid pixels (as
    :func:`torch.nn.functional.cross_entropy` does).
    """

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        ignore_index: int = 255,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", None if weight is None else weight.float().clone())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_shapes(logits, target, self.weight, "loss class weights")
        if not bool((target != self.ignore_index).any()):
            return zero_like_graph(logits)
        scores = upcast(logits)
        return F.cross_entropy(
            scores,
            target.long(),
            weight=None if self.weight is None else self.weight.to(scores.dtype),
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class OhemCrossEntropy(CrossEntropy):
    """Online hard example mining CE (BiSeNet, PIDNet): only the valid pixels whose true-class
    probability is below ``thresh`` count, never fewer than ``min_fraction`` of them (then
    the hardest); class weights weigh the kept pixels' mean as in :class:`CrossEntropy`."""

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = 255,
                 thresh: float = 0.7, min_fraction: float = 1 / 16) -> None:
        super().__init__(weight, ignore_index)
        if not (0 < thresh <= 1 and 0 < min_fraction <= 1):
            raise ValueError(f"ohem thresh and min_fraction must lie in (0, 1], got {thresh}, "
                             f"{min_fraction}")
        self.thresh, self.min_fraction = thresh, min_fraction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_shapes(logits, target, self.weight, "loss class weights")
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return zero_like_graph(logits)
        nll = F.cross_entropy(upcast(logits), target.long(), ignore_index=self.ignore_index,
                              reduction="none")[valid]
        hard = nll.detach().sort(descending=True).values  # selection by the unweighted loss
        keep = max(1, math.ceil(self.min_fraction * hard.numel()))
        kept = nll.detach() >= min(float(hard[keep - 1]), -math.log(self.thresh))
        if self.weight is None:
            return nll[kept].mean()
        w = self.weight.to(nll.dtype)[target[valid].long()][kept]
        return (w * nll[kept]).sum() / w.sum()


@register_loss("ce", options=CrossEntropyOptions)
def build_cross_entropy(options: CrossEntropyOptions, *, ignore_index: int,
                        class_weights: torch.Tensor | None) -> nn.Module:
    """:class:`CrossEntropy` weighted by the class weights."""
    return CrossEntropy(class_weights, ignore_index, label_smoothing=options.label_smoothing)


@register_loss("ohem", options=OhemOptions)
def build_ohem(options: OhemOptions, *, ignore_index: int,
               class_weights: torch.Tensor | None) -> nn.Module:
    """:class:`OhemCrossEntropy` weighted by the class weights."""
    return OhemCrossEntropy(class_weights, ignore_index, options.ohem_thresh,
                            options.ohem_min_fraction)
