"""Segmentation losses: every one takes ``(logits [N,C,H,W], target [N,H,W])`` and skips
pixels whose target is the ignore index.

- :class:`CrossEntropy` (class weights, label smoothing), :class:`FocalLoss` (gamma, alpha),
  :class:`DiceLoss` (soft Dice), :class:`GeneralizedDiceLoss` (Sudre et al. 2017),
  :class:`LovaszSoftmaxLoss` (Berman et al. 2018);
- :class:`WeightedSum` of two losses with fixed weights or the adaptive rule;
- :class:`MainAuxLoss` applies a loss to the model's ``"out"`` and, weighted, ``"aux"`` logits.

:func:`build_loss` builds any of them from a recipe's loss section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ConfigError

LOSS_NAMES = ("ce", "focal", "dice", "generalized_dice", "lovasz")


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    # Half-precision logits (AMP) are scored in float32; float64 stays float64 (gradcheck).
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _zero_like_graph(logits: torch.Tensor) -> torch.Tensor:
    # A batch with only ignored pixels contributes 0 (not NaN) and keeps the graph intact.
    return logits.sum() * 0.0


def _valid_probs_and_onehot(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and one-hot truth of the valid pixels, each ``[P, C]``."""
    num_classes = logits.shape[1]
    probs = _upcast(logits).softmax(dim=1).movedim(1, -1).reshape(-1, num_classes)
    flat_target = target.reshape(-1)
    valid = flat_target != ignore_index
    probs = probs[valid]
    onehot = F.one_hot(flat_target[valid].long(), num_classes).to(probs.dtype)
    return probs, onehot


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if (
        logits.dim() != 4
        or target.dim() != 3
        or logits.shape[0] != target.shape[0]
        or (logits.shape[2:] != target.shape[1:])
    ):
        raise ValueError(
            f"loss expects logits [N,C,H,W] and target [N,H,W] of the same N,H,W; got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )


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
        _check_shapes(logits, target)
        if not bool((target != self.ignore_index).any()):
            return _zero_like_graph(logits)
        scores = _upcast(logits)
        return F.cross_entropy(
            scores,
            target.long(),
            weight=None if self.weight is None else self.weight.to(scores.dtype),
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log p_t``, mean over valid pixels.

    ``alpha`` is None (no weighting), one number (the same for every class) or one per class.
    ``gamma=0`` and ``alpha=None`` give plain cross-entropy.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.ignore_index = ignore_index
        alpha_t = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        self.register_buffer("alpha", alpha_t)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, target)
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return _zero_like_graph(logits)
        log_probs = _upcast(logits).log_softmax(dim=1)
        safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
        log_pt = log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)[valid]
        pt = log_pt.exp()
        loss = -((1 - pt).clamp(min=0) ** self.gamma) * log_pt
        if self.alpha is not None:
            alpha = self.alpha
            alpha = alpha.to(loss.dtype)
            loss = loss * (alpha[safe_target[valid]] if alpha.dim() else alpha)
        return loss.mean()


class DiceLoss(nn.Module):
    """Soft Dice loss: ``1 - mean_c (2 sum p g + s) / (sum p + sum g + s)`` over the batch.

    Computed over all valid pixels of the batch at once; ``smooth`` keeps classes absent from
    both truth and prediction at a Dice near 1 instead of 0/0.
    """

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, target)
        probs, onehot = _valid_probs_and_onehot(logits, target, self.ignore_index)
        if probs.shape[0] == 0:
            return _zero_like_graph(logits)
        inter = (probs * onehot).sum(0)
        total = probs.sum(0) + onehot.sum(0)
        dice = (2 * inter + self.smooth) / (total + self.smooth)
        return 1 - dice.mean()


class GeneralizedDiceLoss(nn.Module):
    """Generalized Dice loss (Sudre et al. 2017) with class weights ``1 / (sum g_c)^2``.

    A class with no truth pixels in the batch would get an infinite weight; it gets the largest
    finite weight instead, so predicting it where it is absent is still penalised.
    """

    def __init__(self, ignore_index: int = 255, eps: float = 1e-6) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, target)
        probs, onehot = _valid_probs_and_onehot(logits, target, self.ignore_index)
        if probs.shape[0] == 0:
            return _zero_like_graph(logits)
        truth = onehot.sum(0)
        weight = torch.where(truth > 0, 1.0 / truth.clamp(min=1) ** 2, torch.zeros_like(truth))
        weight = torch.where(truth > 0, weight, weight.max())
        inter = (weight * (probs * onehot).sum(0)).sum()
        total = (weight * (probs.sum(0) + truth)).sum()
        return 1 - (2 * inter + self.eps) / (total + self.eps)


def _lovasz_gradient(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss for errors sorted descending."""
    positives = sorted_truth.sum()
    intersection = positives - sorted_truth.cumsum(0)
    union = positives + (1 - sorted_truth).cumsum(0)
    jaccard = 1.0 - intersection / union
    # The gradient is the increment of the Jaccard loss as each pixel joins the error set.
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


class LovaszSoftmaxLoss(nn.Module):
    """Lovasz-softmax loss (Berman et al. 2018), a convex surrogate of 1 - IoU.

    Averaged over the classes present in the batch's truth (``classes="present"``) or over all
    classes (``classes="all"``); computed over all valid pixels of the batch.
    """

    def __init__(self, ignore_index: int = 255, classes: str = "present") -> None:
        super().__init__()
        if classes not in ("present", "all"):
            raise ValueError(f"lovasz classes must be 'present' or 'all', got {classes!r}")
        self.ignore_index = ignore_index
        self.classes = classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, target)
        probs, onehot = _valid_probs_and_onehot(logits, target, self.ignore_index)
        if probs.shape[0] == 0:
            return _zero_like_graph(logits)
        losses = []
        for c in range(probs.shape[1]):
            truth = onehot[:, c]
            if self.classes == "present" and not bool(truth.any()):
                continue
            errors = (truth - probs[:, c]).abs()
            errors_sorted, order = errors.sort(descending=True)
            losses.append(torch.dot(errors_sorted, _lovasz_gradient(truth[order])))
        if not losses:
            return _zero_like_graph(logits)
        return torch.stack(losses).mean()


class WeightedSum(nn.Module):
    """``w_a * loss_a + w_b * loss_b`` with fixed weights or the adaptive rule.

    Adaptive rule: after each training step, every loss's ratio ``L(t) / L(t-1)`` (its relative
    decrease) is smoothed by an exponential moving average with factor ``alpha``; the weights
    are those smoothed ratios normalised to sum to 1. A loss that stalls gets more weight, one
    that is falling fast gets less. The state lives in buffers, so it is checkpointed and
    resumed with the model. Weights only move in training mode.
    """

    def __init__(
        self,
        first: nn.Module,
        second: nn.Module,
        weights: Sequence[float] = (0.5, 0.5),
        adaptive: bool = False,
        alpha: float = 0.9,
    ) -> None:
        super().__init__()
        if len(weights) != 2 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weighted sum needs two non-negative weights, got {list(weights)}")
        if not 0 <= alpha < 1:
            raise ValueError(f"adaptive alpha must lie in [0, 1), got {alpha}")
        self.first, self.second = first, second
        self.adaptive = adaptive
        self.alpha = alpha
        w = torch.tensor([float(x) for x in weights])
        self.register_buffer("weights", w / w.sum() if adaptive else w)
        self.register_buffer("smoothed_ratio", torch.ones(2))
        self.register_buffer("previous", torch.full((2,), float("nan")))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values = torch.stack([self.first(logits, target), self.second(logits, target)])
        total = (self.weights.to(values.dtype) * values).sum()
        if self.adaptive and self.training:
            self._update_weights(values.detach().float())
        return total

    @torch.no_grad()
    def _update_weights(self, values: torch.Tensor) -> None:
        if not bool(torch.isnan(self.previous).any()):
            ratio = values / self.previous.clamp(min=1e-12)
            self.smoothed_ratio.mul_(self.alpha).add_((1 - self.alpha) * ratio)
            self.weights.copy_(self.smoothed_ratio / self.smoothed_ratio.sum())
        self.previous.copy_(values)


class MainAuxLoss(nn.Module):
    """Loss on ``outputs["out"]`` plus ``aux_weight`` times the loss on ``outputs["aux"]``.

    Accepts a bare logits tensor too (models without an aux head).
    """

    def __init__(self, loss: nn.Module, aux_weight: float = 0.4) -> None:
        super().__init__()
        self.loss = loss
        self.aux_weight = aux_weight

    def forward(
        self, outputs: Mapping[str, torch.Tensor] | torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        total = self.loss(outputs["out"], target)
        aux = outputs.get("aux")
        if aux is not None and self.aux_weight > 0:
            total = total + self.aux_weight * self.loss(aux, target)
        return total


def _field(cfg: Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def build_single_loss(
    name: str,
    cfg: Any,
    *,
    ignore_index: int = 255,
    class_weights: torch.Tensor | None = None,
) -> nn.Module:
    """One loss by name (see :data:`LOSS_NAMES`), options read from ``cfg``."""
    if name == "ce":
        return CrossEntropy(
            weight=class_weights,
            ignore_index=ignore_index,
            label_smoothing=float(_field(cfg, "label_smoothing", 0.0) or 0.0),
        )
    if name == "focal":
        alpha = _field(cfg, "focal_alpha")
        if alpha is None and class_weights is not None:
            alpha = class_weights
        return FocalLoss(
            gamma=float(_field(cfg, "focal_gamma", 2.0)), alpha=alpha, ignore_index=ignore_index
        )
    if name == "dice":
        return DiceLoss(ignore_index=ignore_index, smooth=float(_field(cfg, "dice_smooth", 1.0)))
    if name == "generalized_dice":
        return GeneralizedDiceLoss(ignore_index=ignore_index)
    if name == "lovasz":
        return LovaszSoftmaxLoss(ignore_index=ignore_index)
    raise ConfigError(f"loss.name: unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")


def build_loss(
    cfg: Any,
    *,
    ignore_index: int = 255,
    class_weights: torch.Tensor | None = None,
) -> nn.Module:
    """Build the recipe's loss (a :class:`seglab.config.LossConfig` or a mapping).

    Fields: ``name`` (one of :data:`LOSS_NAMES`), ``second`` (optional second loss name for a
    weighted sum), ``weights`` (two numbers), ``adaptive`` and ``adaptive_alpha``,
    ``label_smoothing``, ``focal_gamma``, ``focal_alpha``, ``dice_smooth``. ``class_weights``
    (already computed from the training data) go to CE, and to focal as its alpha unless
    ``focal_alpha`` is set. The returned module takes ``(logits, target)``; wrap it in
    :class:`MainAuxLoss` for models with an aux head.
    """
    name = _field(cfg, "name", "ce")
    first = build_single_loss(name, cfg, ignore_index=ignore_index, class_weights=class_weights)
    second_name = _field(cfg, "second")
    if not second_name:
        return first
    second = build_single_loss(
        second_name, cfg, ignore_index=ignore_index, class_weights=class_weights
    )
    return WeightedSum(
        first,
        second,
        weights=tuple(_field(cfg, "weights", (0.5, 0.5)) or (0.5, 0.5)),
        adaptive=bool(_field(cfg, "adaptive", False)),
        alpha=float(_field(cfg, "adaptive_alpha", 0.9)),
    )
