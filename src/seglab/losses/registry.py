"""One registry for every loss's builder: ``@register_loss(name, options=Model)`` beside the
loss's code.

The package face, ``seglab/losses/__init__.py``, imports every loss module and this module
knows none of them (importing ``seglab.losses.registry`` runs the package's ``__init__``
first, so the built-in builders are registered before any lookup here). The names and options
models live in the torch-free :mod:`seglab.loss_options`, which recipes are validated with;
``register_loss`` declares a new name there (a plugin's loss) or checks that the built-in
name's declared options are the ones its builder takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from seglab.errors import ConfigError
from seglab.loss_options import LossOptions, declare_loss, forget_loss, loss_names, options_model


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


_BUILDERS: dict[str, LossBuilder] = {}


def register_loss(
    name: str, *, options: type[LossOptions] | None = None
) -> Callable[[LossBuilder], LossBuilder]:
    """Decorator registering ``builder`` as the loss ``name`` taking ``options`` (None: none).

    Refuses a name registered twice and an option another loss already owns
    (:func:`seglab.loss_options.declare_loss`).
    """

    def register(builder: LossBuilder) -> LossBuilder:
        if name in _BUILDERS:
            raise ConfigError(f"loss name {name!r} is registered twice")
        declare_loss(name, options)
        _BUILDERS[name] = builder
        return builder

    return register


def unregister_loss(name: str) -> None:
    """Forget the loss ``name`` and its options (a plugin unloading, a test's dummy)."""
    _BUILDERS.pop(name, None)
    forget_loss(name)


def loss_entry(name: str) -> LossEntry:
    """The registered loss ``name``; ConfigError listing the registered names otherwise."""
    builder = _BUILDERS.get(name)
    if builder is None:
        known = [n for n in loss_names() if n in _BUILDERS]
        raise ConfigError(f"loss.name: unknown loss {name!r}; choose one of {', '.join(known)}")
    return LossEntry(name, builder, options_model(name))
