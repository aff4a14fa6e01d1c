"""The losses a recipe may name and the options each one takes, without torch.

A recipe writes every loss's options flat in its ``loss`` section (``loss.focal_gamma: 3``),
so an option's name belongs to one loss only (hence the prefixes) and the section's keys are
validated against the union of the declared models (:func:`validate_options`). This module
is light on purpose: ``seglab.config`` validates recipes with it (a typo in a recipe is
reported without loading torch), while the losses themselves and their builders live in
``seglab.losses``, whose ``register_loss`` declares a loss here as it registers the builder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from seglab.errors import ConfigError


class LossOptions(BaseModel):
    """Base of a loss's options model: each field is a recipe key of the ``loss`` section,
    with its default, bounds and description spelled once, there."""

    # allow_inf_nan: a NaN option trains to NaN weights, as in every recipe section.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_DECLARED: dict[str, type[LossOptions]] = {}


def declare_loss(name: str, options: type[LossOptions] | None = None) -> None:
    """Make ``name`` a loss recipes may name, taking the options of ``options``.

    Declaring a name again with the same model (or none) is a no-op: that is how a built-in
    loss's builder registers. Refuses another model for a declared name, and an option
    another loss already owns (recipes write options flat, so each key names one loss).
    """
    known = _DECLARED.get(name)
    if known is not None:
        if options in (None, known):
            return
        raise ConfigError(f"loss name {name!r} is registered twice")
    model = options or LossOptions
    owners = _option_owners()
    taken = sorted(key for key in model.model_fields if key in owners)
    if taken:
        raise ConfigError(f"loss {name!r}: option {', '.join(taken)} already belongs to "
                          f"loss {owners[taken[0]]!r}; give it a prefix of its own")
    _DECLARED[name] = model


def forget_loss(name: str) -> None:
    """Undeclare ``name`` (a plugin unloading, a test's dummy); unknown names are ignored."""
    _DECLARED.pop(name, None)


def loss_names() -> tuple[str, ...]:
    """The losses recipes may name, in declaration order (the built-in ones first)."""
    return tuple(_DECLARED)


def options_model(name: str) -> type[LossOptions]:
    """The options model of the declared loss ``name`` (KeyError for another name)."""
    return _DECLARED[name]


def _option_owners() -> dict[str, str]:
    return {key: name for name, model in _DECLARED.items() for key in model.model_fields}


def option_fields() -> dict[str, FieldInfo]:
    """Every declared loss's option fields by recipe key (bounds, defaults, descriptions)."""
    return {key: _DECLARED[name].model_fields[key] for key, name in _option_owners().items()}


def validate_options(values: Mapping[str, Any], title: str = "loss options") -> dict[str, Any]:
    """Every declared loss's options, from ``values`` where given, else their defaults.

    Raises a pydantic ValidationError (named ``title``) located at each bad key: a value out
    of its model's bounds, or a key that no declared loss owns (``extra_forbidden``).
    """
    owners = _option_owners()
    errors: list[Any] = []
    resolved: dict[str, Any] = {}
    for model in _DECLARED.values():
        given = {k: v for k, v in values.items() if k in model.model_fields}
        try:
            resolved.update(model.model_validate(given).model_dump())
        except ValidationError as exc:
            errors.extend(exc.errors())
    errors.extend({"type": "extra_forbidden", "loc": (key,), "input": value}
                  for key, value in values.items() if key not in owners)
    if errors:
        raise ValidationError.from_exception_data(title, errors)
    return resolved


# --- the built-in losses' options (their losses and builders: seglab.losses.<family>) ---------


class CrossEntropyOptions(LossOptions):
    """``loss.name: ce`` options."""

    label_smoothing: float = Field(0.0, ge=0, lt=1)


class OhemOptions(LossOptions):
    """``loss.name: ohem`` options."""

    ohem_thresh: float = Field(0.7, gt=0, le=1, description="ohem: hard = true-class p below")
    ohem_min_fraction: float = Field(1 / 16, gt=0, le=1, description="ohem: least share kept")


FocalReduction = Literal["weighted", "mean"]


class FocalOptions(LossOptions):
    """``loss.name: focal`` options."""

    focal_gamma: float = Field(2.0, ge=0)
    focal_alpha: float | list[float] | None = None
    focal_reduction: FocalReduction = Field(
        "weighted",
        description="per-class alpha: divide by the sum of the pixels' weights (= weighted CE "
        "at gamma 0) or by the pixel count",
    )

    @field_validator("focal_alpha")
    @classmethod
    def _alpha_not_negative(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        if any(v is not None and v < 0 for v in values):
            raise ValueError(f"loss.focal_alpha values must be >= 0, got {value}")
        return value


class DiceOptions(LossOptions):
    """``loss.name: dice`` options."""

    dice_smooth: float = Field(1.0, ge=0)


# In the order errors and recipe.yaml list them; "ce" is the recipe's default.
declare_loss("ce", CrossEntropyOptions)
declare_loss("ohem", OhemOptions)
declare_loss("focal", FocalOptions)
declare_loss("dice", DiceOptions)
declare_loss("generalized_dice")
declare_loss("lovasz")
