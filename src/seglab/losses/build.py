"""A recipe's loss section -> the loss module: one registered loss, or a weighted sum of two."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from seglab.errors import ConfigError
from seglab.losses.combined import WeightedSum
from seglab.losses.registry import loss_entry

_MISSING = object()


def _field(cfg: Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def build_single_loss(name: str, cfg: Any, *, ignore_index: int = 255,
                      class_weights: torch.Tensor | None = None) -> nn.Module:
    """The registered loss ``name`` (see ``loss_names()``), its options read from ``cfg``
    (defaults where ``cfg`` has none) and validated by the loss's options model."""
    entry = loss_entry(name)
    given = {key: value for key in entry.options.model_fields
             if (value := _field(cfg, key, _MISSING)) is not _MISSING}
    options = entry.options.model_validate(given)
    return entry.builder(options, ignore_index=ignore_index, class_weights=class_weights)


def build_loss(
    cfg: Any,
    *,
    ignore_index: int = 255,
    class_weights: torch.Tensor | None = None,
) -> nn.Module:
    """Build the recipe's loss (a :class:`seglab.config.LossConfig` or a mapping).

    Fields: ``name`` (a registered loss), ``second`` (optional second loss name for a
    weighted sum), ``weights`` (two numbers), ``adaptive`` and ``adaptive_alpha`` (the study's
    rule, :func:`~seglab.losses.combined.adaptive_update`; when it runs is the caller's
    ``adaptive_every``) and each loss's own options (``label_smoothing``, ``ohem_thresh``,
    ``ohem_min_fraction``, ``focal_gamma``, ``focal_alpha``, ``focal_reduction``,
    ``dice_smooth``: the options models of the registered losses). ``class_weights`` (already
    computed from the training data) go to CE and OHEM, and to focal as its alpha unless
    ``focal_alpha`` is set. The returned module takes ``(logits, target)``; wrap it in
    :class:`~seglab.losses.combined.MainAuxLoss` for models with an aux head.
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
