"""A training that diverges stops at once, with one line naming the step and the likely setting.

A NaN or infinite loss (or NaN weights about to be checkpointed) means every later number
would be garbage: a NaN model predicts one class everywhere and still gets an mIoU. The
module raises :class:`TrainingDiverged` instead, before any checkpoint of NaN weights is
written and before anything is exported.
"""

from __future__ import annotations

from typing import Any

import torch

from seglab.errors import SeglabError
from seglab.models.weights import non_finite_tensors


class TrainingDiverged(SeglabError):
    """The loss or the weights became NaN/infinite during training."""


def _settings(recipe: Any) -> str:
    optim = recipe.optim
    hint = f"lower optim.lr (now {optim.lr:g})"
    if optim.weight_decay > 1:
        hint += f" or optim.weight_decay (now {optim.weight_decay:g})"
    if recipe.trainer.grad_clip is None:
        hint += ", or set trainer.grad_clip"
    return hint


def check_loss(loss: torch.Tensor, recipe: Any, step: int, epoch: int) -> None:
    """Raise :class:`TrainingDiverged` when ``loss`` is NaN or infinite (1-based ``step``)."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    value = float(loss.detach().float().reshape(-1)[0])
    raise TrainingDiverged(
        f"training diverged at step {step} (epoch {epoch}): the loss is {value}; "
        f"{_settings(recipe)}. Nothing was exported from this run"
    )


def check_weights(state: dict[str, Any], recipe: Any, step: int, epoch: int) -> None:
    """Raise :class:`TrainingDiverged` when a weight about to be checkpointed is not finite."""
    bad = non_finite_tensors(state)
    if bad:
        raise TrainingDiverged(
            f"training diverged at step {step} (epoch {epoch}): {len(bad)} weight tensors hold "
            f"NaN or infinite values (e.g. {bad[0]}); {_settings(recipe)}. Nothing was "
            "exported from this run"
        )
