"""One registry for every loss: a name, a builder and the typed options a recipe may give it.

Loss modules register beside their code with ``@register_loss(name, options=Model)``; the
package face, ``seglab/losses/__init__.py``, imports every loss module and this module knows
none of them (importing ``seglab.losses.registry`` runs the package's ``__init__`` first, so
the built-in losses are registered before any lookup here).

A recipe writes every loss's options flat in its ``loss`` section (``loss.focal_gamma: 3``),
so an option's name belongs to one loss only (hence the prefixes) and a recipe's option keys
are validated against the union of the registered models (:func:`validate_options`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from torch import nn

from seglab.errors import ConfigError


class LossOptions(BaseModel):
    """Base of a loss's options model: each field is a recipe key of the ``loss`` section,
    with its default, bounds and description spelled once, here."""

    # allow_inf_nan: a NaN option trains to NaN weights, as in every recipe section.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LossBuilder(Protocol):
    """``builder(options, *, ignore_index, class_weights) -> nn.Module`` taking
    ``(logits [N,C,H,W], target [N,H,W])``; ``class_weights`` are computed from the training
    data (None: unweighted) and the builder decides whether its loss uses them."""

    def __call__(self, options: Any, *, ignore_index: int,
                 class_weights: torch.Tensor | None) -> nn.Module: ...


@dataclass(frozen=True)
class LossEntry:
    """A registered loss: its builder and its options model."""

    name: str
    builder: LossBuilder
    options: type[LossOptions]


_REGISTRY: dict[str, LossEntry] = {}


def register_loss(
    name: str, *, options: type[LossOptions] = LossOptions
) -> Callable[[LossBuilder], LossBuilder]:
    """Decorator registering ``builder`` as the loss ``name`` with its ``options`` model.

    Refuses a name registered twice and an option another loss already owns (recipes write
    options flat, so each key must say which loss it configures).
    """

    def register(builder: LossBuilder) -> LossBuilder:
        if name in _REGISTRY:
            raise ConfigError(f"loss name {name!r} is registered twice")
        owners = _option_owners()
        taken = sorted(key for key in options.model_fields if key in owners)
        if taken:
            raise ConfigError(f"loss {name!r}: option {', '.join(taken)} already belongs to "
                              f"loss {owners[taken[0]].name!r}; give it a prefix of its own")
        _REGISTRY[name] = LossEntry(name, builder, options)
        return builder

    return register


def unregister_loss(name: str) -> None:
    """Forget the loss ``name`` (a plugin unloading, a test's dummy); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def loss_names() -> tuple[str, ...]:
    """The registered loss names, in registration order."""
    return tuple(_REGISTRY)


def loss_entry(name: str) -> LossEntry:
    """The registered loss ``name``; ConfigError listing the registered names otherwise."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"loss.name: unknown loss {name!r}; choose one of "
                          f"{', '.join(_REGISTRY)}")
    return entry


def _option_owners() -> dict[str, LossEntry]:
    return {key: entry for entry in _REGISTRY.values() for key in entry.options.model_fields}


def option_fields() -> dict[str, FieldInfo]:
    """Every registered loss's option fields by recipe key (bounds, defaults, descriptions)."""
    return {key: entry.options.model_fields[key] for key, entry in _option_owners().items()}


def validate_options(values: Mapping[str, Any], title: str = "loss options") -> dict[str, Any]:
    """Every registered loss's options, from ``values`` where given, else their defaults.

    Raises a pydantic ValidationError (named ``title``) located at each bad key: a value out
    of its model's bounds, or a key that no registered loss owns (``extra_forbidden``).
    """
    owners = _option_owners()
    errors: list[Any] = []
    resolved: dict[str, Any] = {}
    for entry in _REGISTRY.values():
        given = {k: v for k, v in values.items() if k in entry.options.model_fields}
        try:
            resolved.update(entry.options.model_validate(given).model_dump())
        except ValidationError as exc:
            errors.extend(exc.errors())
    errors.extend({"type": "extra_forbidden", "loc": (key,), "input": value}
                  for key, value in values.items() if key not in owners)
    if errors:
        raise ValidationError.from_exception_data(title, errors)
    return resolved
