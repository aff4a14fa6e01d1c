"""What the loss families share: the input check, half-precision scoring, the empty batch, and
the base of the losses computed from softmax probabilities."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ConfigError


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (AMP) scored in float32; float64 stays float64 (gradcheck)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def zero_like_graph(logits: torch.Tensor) -> torch.Tensor:
    """A batch with only ignored pixels contributes 0 (not NaN) and keeps the graph intact."""
    return logits.sum() * 0.0


def valid_probs_and_onehot(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and one-hot truth of the valid pixels, each ``[P, C]``."""
    num_classes = logits.shape[1]
    probs = upcast(logits).softmax(dim=1).movedim(1, -1).reshape(-1, num_classes)
    flat_target = target.reshape(-1)
    valid = flat_target != ignore_index
    probs = probs[valid]
    onehot = F.one_hot(flat_target[valid].long(), num_classes).to(probs.dtype)
    return probs, onehot


def check_shapes(logits: torch.Tensor, target: torch.Tensor,
                 per_class: torch.Tensor | None = None, what: str = "") -> None:
    """Refuse logits and target that do not pair up, and ``per_class`` values (named ``what``)
    whose count is not the model's class count."""
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


class SoftmaxLoss(nn.Module, ABC):
    """A loss of the valid pixels' softmax probabilities and one-hot truth, each ``[P, C]``
    (Dice, generalized Dice, Lovasz): subclasses define :meth:`of_probs`."""

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    @abstractmethod
    def of_probs(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor | None:
        """The loss of ``P >= 1`` valid pixels; None when it has nothing to score."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_shapes(logits, target)
        probs, onehot = valid_probs_and_onehot(logits, target, self.ignore_index)
        loss = self.of_probs(probs, onehot) if probs.shape[0] else None
        return zero_like_graph(logits) if loss is None else loss
