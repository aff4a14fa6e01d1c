"""The checks of the recipe's ``loss`` section: the loss names a recipe may write, the losses'
own options written flat beside the section's fields (``loss.focal_gamma: 3``), and the
class-weight strategy.

``config.LossConfig`` binds these functions as its validators and serializer, so config
names no loss: a loss declared in :mod:`seglab.loss_options` (every built-in one, and any
registered with ``seglab.losses.register_loss``) is a valid ``loss.name`` and its options
model validates its keys, bounds and defaults, all without loading torch.
"""

from __future__ import annotations

from typing import Any

from pydantic import ModelWrapValidatorHandler, SerializerFunctionWrapHandler, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from seglab import loss_options
from seglab.errors import ConfigError


def _one_of(names: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'``: how pydantic lists a Literal's choices."""
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def registered_loss(value: str | None) -> str | None:
    """``loss.name`` / ``loss.second``: a registered loss (the error lists them, as a Literal's
    would)."""
    names = loss_options.loss_names()
    if value is not None and value not in names:
        raise PydanticCustomError("literal_error", "Input should be {expected}",
                                  {"expected": _one_of(names)})
    return value


def with_options(cls: Any, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
    """Validate the section's own fields with ``handler`` and every other key as a loss option;
    the errors of both come together, each at its key, and the options (all declared
    losses', defaults filled) become the section's extra fields."""
    if not isinstance(data, dict):
        return handler(data)
    options = {k: v for k, v in data.items() if k not in cls.model_fields}
    errors: list[Any] = []
    try:
        section = handler({k: v for k, v in data.items() if k in cls.model_fields})
    except ValidationError as exc:
        errors = exc.errors()
    try:
        resolved = loss_options.validate_options(options, cls.__name__)
    except ValidationError as exc:
        errors += exc.errors()
    if errors:
        raise ValidationError.from_exception_data(cls.__name__, errors)
    shadowed = sorted(set(resolved) & set(cls.model_fields))
    if shadowed:  # a plugin's mistake: the recipe could never set that option
        raise ConfigError(f"a declared loss has the option {', '.join(shadowed)}, a field of "
                          "the loss section itself: rename the option")
    section.__pydantic_extra__ = resolved
    section.__pydantic_fields_set__.update(options)
    return section


def known_class_weights(self: Any) -> Any:
    """``loss.class_weights`` names a strategy and ``class_weight_params`` only its parameters:
    checked with the recipe, not when training meets it after writing the run folder. (Bound
    as LossConfig's method, hence ``self``: pydantic reads the signature.)"""
    if self.class_weights is None:
        return self
    # lazy: seglab.data.stats loads torch; a recipe without class weights never needs it.
    from seglab.data.stats import STRATEGIES, STRATEGY_PARAMS

    if self.class_weights not in STRATEGIES:
        raise ValueError(f"loss.class_weights {self.class_weights!r} is not a strategy; "
                         f"choose one of {', '.join(STRATEGIES)}")
    allowed = (*STRATEGY_PARAMS[self.class_weights], "absent_weight")
    unknown = sorted(set(self.class_weight_params) - set(allowed))
    if unknown:
        raise ValueError(f"loss.class_weight_params: {self.class_weights!r} takes "
                         f"{', '.join(allowed)}, not {', '.join(unknown)}")
    return self


def checked_option(section_name: str, name: str, value: Any) -> Any:
    """``value`` for the option ``name`` assigned after validation, checked by its model."""
    return loss_options.validate_options({name: value}, section_name)[name]


def fields_with_options(fields: dict[str, FieldInfo]) -> dict[str, FieldInfo]:
    """The section's ``fields`` with every declared loss's options before ``aux_weight``,
    where recipe.yaml lists them."""
    fields = dict(fields)
    aux_weight = fields.pop("aux_weight")
    return {**fields, **loss_options.option_fields(), "aux_weight": aux_weight}


def aux_weight_last(self: Any, handler: SerializerFunctionWrapHandler) -> Any:
    """The section's dump with ``aux_weight`` after the options (extras dump after fields), so
    recipe.yaml keeps the key order it had when config.py declared every option. (Bound as
    LossConfig's method, hence ``self``.)"""
    data = handler(self)
    if isinstance(data, dict) and "aux_weight" in data:
        data["aux_weight"] = data.pop("aux_weight")
    return data
