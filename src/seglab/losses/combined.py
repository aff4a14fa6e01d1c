"""Losses made of losses: :class:`WeightedSum` of two (fixed weights or the Cityscapes U-Net
study's adaptive rule, :func:`adaptive_update`) and :class:`MainAuxLoss` over a model's
``"out"`` and ``"aux"`` logits."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

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
