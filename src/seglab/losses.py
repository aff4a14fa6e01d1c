"""Segmentation losses: every one takes ``(logits [N,C,H,W], target [N,H,W])`` and skips
pixels whose target is the ignore index.

- :class:`CrossEntropy` (class weights, label smoothing), :class:`OhemCrossEntropy` (the
  hardest pixels only), :class:`FocalLoss` (gamma, alpha),
  :class:`DiceLoss` (soft Dice), :class:`GeneralizedDiceLoss` (Sudre et al. 2017),
  :class:`LovaszSoftmaxLoss` (Berman et al. 2018);
- :class:`WeightedSum` of two losses with fixed weights or the adaptive rule of the
  Cityscapes U-Net study (:func:`adaptive_update`);
- :class:`MainAuxLoss` applies a loss to the model's ``"out"`` and, weighted, ``"aux"`` logits.

:func:`build_loss` builds any of them from a recipe's loss section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ConfigError

LOSS_NAMES = ("ce", "ohem", "focal", "dice", "generalized_dice", "lovasz")
FOCAL_REDUCTIONS = ("weighted", "mean")


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


def _check_shapes(logits: torch.Tensor, target: torch.Tensor,
                  per_class: torch.Tensor | None = None, what: str = "") -> None:
    if per_class is not None and per_class.dim() == 1 and len(per_class) != logits.shape[1]:
        raise ConfigError(f"{what} has {len(per_class)} values but the model predicts "
                          f"{logits.shape[1]} classes: give one value per class")
    if (
        logits.dim() != 4
        or target.dim() != 3
        or logits.shape[0] != target.shape[0]
        or (logits.shape[2:] != target.shape[1:])
    ):
        raise ValueError(f"loss expects logits [N,C,H,W] and target [N,H,W] of the same N,H,W; "
                         f"got {tuple(logits.shape)} and {tuple(target.shape)}")


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
        _check_shapes(logits, target, self.weight, "loss class weights")
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
        _check_shapes(logits, target, self.weight, "loss class weights")
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return _zero_like_graph(logits)
        nll = F.cross_entropy(_upcast(logits), target.long(), ignore_index=self.ignore_index,
                              reduction="none")[valid]
        hard = nll.detach().sort(descending=True).values  # selection by the unweighted loss
        keep = max(1, math.ceil(self.min_fraction * hard.numel()))
        kept = nll.detach() >= min(float(hard[keep - 1]), -math.log(self.thresh))
        if self.weight is None:
            return nll[kept].mean()
        w = self.weight.to(nll.dtype)[target[valid].long()][kept]
        return (w * nll[kept]).sum() / w.sum()


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
        _check_shapes(logits, target, self.alpha, "loss.focal_alpha")
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return _zero_like_graph(logits)
        log_probs = _upcast(logits).log_softmax(dim=1)
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


ADAPTIVE_EPS = 1e-8  # the study's guard in d_i = (o_i - l_i) / (l_i + eps)


def _normalised_reciprocals(values: Sequence[float]) -> list[float]:
    """``1 / v_i`` normalised to sum 1; a zero value takes all the weight (the limit of 1/v)."""
    zeros = [v == 0 for v in values]
    if any(zeros):
        return [1.0 / sum(zeros) if z else 0.0 for z in zeros]
    inverse = [1.0 / v for v in values]
    total = sum(inverse)
    return [x / total for x in inverse]


def adaptive_update(
    weights: Sequence[float],
    previous: Sequence[float] | None,
    losses: Sequence[float],
    alpha: float,
) -> list[float]:
    """One update of the Cityscapes U-Net study's adaptive loss weights.

    With ``l`` the losses now and ``o`` their values at the previous update: the first update
    (``previous`` None) gives ``1 / l_i`` normalised to sum 1. Afterwards
    ``d_i = (o_i - l_i) / (l_i + 1e-8)``; if any ``d_i < 0`` every ``d_i`` becomes ``|d_i|``,
    else ``1 / d_i``; ``d`` is normalised to sum 1 and rounded to 3 decimals; then
    ``w_i = round((1 - alpha) * w_i + alpha * d_i, 3)``, normalised to sum 1. ``alpha`` is the
    share of the new value. A zero where the study divides by it (``l_i = 0`` first, or
    ``d_i = 0``) is taken at its limit: that loss gets all the weight.
    """
    if previous is None:
        return _normalised_reciprocals(losses)
    d = [(o - value) / (value + ADAPTIVE_EPS) for o, value in zip(previous, losses, strict=True)]
    if any(x < 0 for x in d):
        d = [abs(x) for x in d]
        total = sum(d)
        d = [x / total for x in d]
    else:
        d = _normalised_reciprocals(d)
    d = [round(x, 3) for x in d]
    w = [round((1 - alpha) * wi + alpha * di, 3) for wi, di in zip(weights, d, strict=True)]
    total = sum(w)
    return [x / total for x in w]


class WeightedSum(nn.Module):
    """``w_a * loss_a + w_b * loss_b`` with fixed weights or the study's adaptive rule.

    Adaptive weights (:func:`adaptive_update`) start at the given weights normalised to sum 1
    and move only when the caller passes the losses to :meth:`update` (the training module
    does, once per epoch or per step, with the main head's losses). The weights are plain
    floats, constants of the loss graph, so an update never touches a tensor that backward
    still needs. The state (weights, previous losses) is the module's extra state: it is
    saved in checkpoints and restored on resume.
    """

    def __init__(
        self,
        first: nn.Module,
        second: nn.Module,
        weights: Sequence[float] = (0.5, 0.5),
        adaptive: bool = False,
        alpha: float = 0.9,
        names: Sequence[str] = ("first", "second"),
    ) -> None:
        super().__init__()
        if len(weights) != 2 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weighted sum needs two non-negative weights, got {list(weights)}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"adaptive alpha must lie in [0, 1], got {alpha}")
        if len(names) != 2 or names[0] == names[1]:
            raise ValueError(f"weighted sum needs two different loss names, got {list(names)}")
        self.first, self.second = first, second
        self.names = (str(names[0]), str(names[1]))
        self.adaptive = adaptive
        self.alpha = alpha
        w = [float(x) for x in weights]
        self.weights = [x / sum(w) for x in w] if adaptive else w
        self.previous: list[float] | None = None

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two unweighted losses, by name."""
        return {
            self.names[0]: self.first(logits, target),
            self.names[1]: self.second(logits, target),
        }

    def combine(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of :meth:`terms` with the current weights."""
        return self.weights[0] * terms[self.names[0]] + self.weights[1] * terms[self.names[1]]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.combine(self.terms(logits, target))

    def update(self, losses: Sequence[float]) -> None:
        """One adaptive update from the two losses (in :attr:`names` order).

        Ignored for fixed weights, and when a loss is not finite (a diverged batch would
        otherwise turn the weights into NaN for the rest of the run).
        """
        values = [float(v) for v in losses]
        if not self.adaptive or not all(math.isfinite(v) for v in values):
            return
        self.weights = adaptive_update(self.weights, self.previous, values, self.alpha)
        self.previous = values

    def get_extra_state(self) -> dict[str, Any]:
        return {"weights": list(self.weights), "previous": self.previous}

    def set_extra_state(self, state: Any) -> None:
        self.weights = [float(w) for w in state["weights"]]
        previous = state.get("previous")
        self.previous = None if previous is None else [float(v) for v in previous]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints from before the weights were extra state held them as buffers; those
        # runs keep this module's initial weights.
        for legacy in ("weights", "smoothed_ratio", "previous"):
            state_dict.pop(prefix + legacy, None)
        if prefix + "_extra_state" not in state_dict:
            state_dict[prefix + "_extra_state"] = self.get_extra_state()
        super()._load_from_state_dict(state_dict, prefix, *args)


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
        return self.with_terms(outputs, target)[0]

    def with_terms(
        self, outputs: Mapping[str, torch.Tensor] | torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss and the main head's unweighted loss terms (detached; empty unless
        the loss is a :class:`WeightedSum`): what adaptive weights and the history use."""
        main = outputs if isinstance(outputs, torch.Tensor) else outputs["out"]
        terms: dict[str, torch.Tensor] = {}
        if isinstance(self.loss, WeightedSum):
            terms = self.loss.terms(main, target)
            total = self.loss.combine(terms)
        else:
            total = self.loss(main, target)
        aux = None if isinstance(outputs, torch.Tensor) else outputs.get("aux")
        if aux is not None and self.aux_weight > 0:
            total = total + self.aux_weight * self.loss(aux, target)
        return total, {name: value.detach() for name, value in terms.items()}


def _field(cfg: Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def build_single_loss(name: str, cfg: Any, *, ignore_index: int = 255,
                      class_weights: torch.Tensor | None = None) -> nn.Module:
    """One loss by name (see :data:`LOSS_NAMES`), options read from ``cfg``."""
    if name == "ce":
        smoothing = float(_field(cfg, "label_smoothing", 0.0) or 0.0)
        return CrossEntropy(class_weights, ignore_index, label_smoothing=smoothing)
    if name == "ohem":
        thresh, part = _field(cfg, "ohem_thresh", 0.7), _field(cfg, "ohem_min_fraction", 1 / 16)
        return OhemCrossEntropy(class_weights, ignore_index, float(thresh), float(part))
    if name == "focal":
        alpha = _field(cfg, "focal_alpha")
        if alpha is None and class_weights is not None:
            alpha = class_weights
        return FocalLoss(gamma=float(_field(cfg, "focal_gamma", 2.0)), alpha=alpha,
                         ignore_index=ignore_index,
                         reduction=str(_field(cfg, "focal_reduction", "weighted")))
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
    weighted sum), ``weights`` (two numbers), ``adaptive`` and ``adaptive_alpha`` (the study's
    rule, :func:`adaptive_update`; when it runs is the caller's ``adaptive_every``),
    ``label_smoothing``, ``ohem_thresh``, ``ohem_min_fraction``, ``focal_gamma``,
    ``focal_alpha``, ``focal_reduction``, ``dice_smooth``. ``class_weights`` (already computed
    from the training data) go to CE and OHEM, and to focal as its alpha unless ``focal_alpha``
    is set. The returned module takes
    ``(logits, target)``; wrap it in :class:`MainAuxLoss` for models with an aux head.
    """
    name = _field(cfg, "name", "ce")
    first = build_single_loss(name, cfg, ignore_index=ignore_index, class_weights=class_weights)
    second_name = _field(cfg, "second")
    adaptive = bool(_field(cfg, "adaptive", False))
    if not second_name:
        if adaptive:
            raise ConfigError("loss.adaptive weighs two losses: set loss.second as well")
        return first
    if second_name == name:
        raise ConfigError(f"loss.second must differ from loss.name (both are {name!r})")
    second = build_single_loss(
        second_name, cfg, ignore_index=ignore_index, class_weights=class_weights
    )
    return WeightedSum(
        first,
        second,
        weights=tuple(_field(cfg, "weights", (0.5, 0.5)) or (0.5, 0.5)),
        adaptive=adaptive,
        alpha=float(_field(cfg, "adaptive_alpha", 0.9)),
        names=(name, second_name),
    )
