"""Search spaces over recipe fields: parsing, validation against the Recipe, sampling, grids.

A space maps a recipe field's dotted name to a dimension::

    optim.lr: {log_uniform: [1.0e-4, 1.0e-2]}      # float on a log scale
    optim.momentum: {uniform: [0.8, 0.99], step: 0.01}
    loss.class_weight_params.X: {int: [10, 100], step: 10}   # int, optional step / log
    optim.name: {choice: [sgd, adam, rmsprop]}
    model.name:                                    # per-choice settings and sub-spaces
      choice:
        lraspp_mobilenet_v3_large: {model.freeze: {choice: ["last:1", "last:2"]}}
        fcn_resnet50: {model.freeze: "last:1", data.batch_size: 4}

Inside a per-choice mapping a value is a dimension (a mapping with one of the kinds above) or
a fixed value applied whenever that choice is drawn. Every field name is checked against the
Recipe's sections and every endpoint/choice is validated as a recipe before anything trains,
so a typo or an impossible value is an error naming the key.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from seglab.config import Recipe
from seglab.errors import ConfigError

KINDS = ("choice", "uniform", "log_uniform", "int")
OPTION_KEYS = {"step", "log"}
MAX_GRID = 100_000
# Optuna's categorical choices must be plain scalars; other values travel as JSON text.
_SCALARS = (str, int, float, bool, type(None))


@dataclass
class Dimension:
    """One searched recipe field.

    ``name`` is the Optuna parameter name: the dotted key, qualified with the parent choice
    for a per-choice dimension (``model.freeze@lraspp_mobilenet_v3_large``), so two choices
    may search the same field over different values.
    """

    key: str
    kind: str  # "choice", "float" or "int"
    name: str
    choices: list[Any] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    # choice value (as encoded) -> (fixed values, sub-dimensions) drawn with it
    branches: dict[Any, tuple[dict[str, Any], list[Dimension]]] = field(default_factory=dict)

    def encoded_choices(self) -> list[Any]:
        return [_encode(c) for c in self.choices]

    def grid_values(self) -> list[Any]:
        """The values a grid sweep visits (choices, or an int/float range with a step)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "float" and (self.log or self.step is None):
            raise ConfigError(
                f"space {self.key}: a grid needs a finite set of values; a continuous range "
                "has none (use {choice: [...]}, or uniform with a step)"
            )
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values = [self.low + i * step for i in range(count)]
        if self.kind == "int":
            return [int(round(v)) for v in values]
        return [round(v, 12) for v in values]

    def describe(self) -> str:
        """A short text of the range, for reports."""
        if self.kind == "choice":
            return "choice of " + ", ".join(str(c) for c in self.choices)
        scale = "log " if self.log else ""
        step = f" step {self.step:g}" if self.step else ""
        return f"{scale}{self.kind} in [{self.low:g}, {self.high:g}]{step}"


@dataclass
class SearchSpace:
    """Parsed dimensions; ``sample`` draws one assignment through an Optuna trial."""

    dimensions: list[Dimension]

    @property
    def keys(self) -> list[str]:
        """Every searched recipe field, in order, without repeats."""
        seen: dict[str, None] = {}
        for dim in _walk(self.dimensions):
            seen.setdefault(dim.key, None)
        return list(seen)

    def distributions(self) -> dict[str, Dimension]:
        """Every dimension by its Optuna name."""
        return {dim.name: dim for dim in _walk(self.dimensions)}

    def sample(self, trial: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(params, fixed)``: searched values and per-choice fixed values, by dotted key."""
        params: dict[str, Any] = {}
        fixed: dict[str, Any] = {}
        _sample(self.dimensions, trial, params, fixed)
        return params, fixed

    def grid(self) -> list[dict[str, Any]]:
        """Every point of a full sweep as ``{optuna name: encoded value}`` (deterministic order)."""
        points = _grid(self.dimensions)
        if len(points) > MAX_GRID:
            raise ConfigError(f"the grid has {len(points)} points (at most {MAX_GRID})")
        return points

    def decode(self, optuna_params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(params, fixed)`` of a stored trial's Optuna parameters (see :meth:`sample`)."""
        return self.sample(_Replay(optuna_params))


def parse_space(raw: Any, source: str = "space") -> SearchSpace:
    """Parse a ``space`` mapping; errors name the key and what is wrong."""
    if raw is None:
        return SearchSpace([])
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of 'section.field: {{kind: ...}}'")
    dims = []
    for key, spec in raw.items():
        if not _is_dimension(spec):
            raise ConfigError(
                f"{source} {key}: expected a dimension such as {{choice: [...]}}, "
                f"{{uniform: [low, high]}}, {{log_uniform: [low, high]}} or {{int: [low, high]}}; "
                f"got {spec!r} (fixed values belong in the base recipe)"
            )
        dims.append(_dimension(str(key), spec, prefix="", source=source))
    _check_unique(dims, source)
    return SearchSpace(dims)


def validate_space(space: SearchSpace, base: dict[str, Any], grid: bool = False) -> None:
    """Check every field exists in the Recipe and every value forms a valid recipe.

    Each choice and each range end is applied to ``base`` (a recipe mapping) and validated;
    with ``grid`` every grid point is. Raises ConfigError naming the space key.
    """
    for dim in _walk(space.dimensions):
        check_field(dim.key)
    _check_model_names(space)
    if grid:
        points = space.grid()
        for point in points[:2000]:  # a bigger grid is validated at its first 2000 points
            params, fixed = space.decode(point)
            _validate(base, {**fixed, **params}, f"grid point {params}")
        return
    _validate_dims(space.dimensions, base, {})


def check_field(key: str) -> None:
    """Raise ConfigError unless ``key`` names a Recipe field (free keys inside dict fields)."""
    model: type[BaseModel] = Recipe
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"space {key}: not a dotted field name such as optim.lr")
    for depth, part in enumerate(parts):
        fields = model.known_fields()  # the loss section's include the losses' options
        if part not in fields:
            where = ".".join(parts[:depth]) or "the recipe"
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f" (did you mean {'.'.join([*parts[:depth], close[0]])}?)" if close else ""
            raise ConfigError(
                f"space {key}: unknown recipe field {part!r} in {where}{hint}; "
                f"{where} has: {', '.join(fields)}"
            )
        annotation = fields[part].annotation
        rest = parts[depth + 1 :]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if not rest:
                raise ConfigError(f"space {key}: is a whole section; search one of its fields")
            model = annotation
            continue
        if rest and getattr(annotation, "__origin__", None) is not dict:
            value = ".".join(parts[: depth + 1])
            raise ConfigError(f"space {key}: {value} is a value, not a section")
        return


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c = value`` in nested dicts (creating sections; a whole value is replaced)."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def apply_values(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with dotted ``values`` set (shorter keys first, so sections nest)."""
    out = copy.deepcopy(base)
    for key in sorted(values, key=lambda k: k.count(".")):
        set_dotted(out, key, values[key])
    return out


# --- parsing ---------------------------------------------------------------------------------


def _is_dimension(spec: Any) -> bool:
    return (
        isinstance(spec, dict)
        and len(set(spec) & set(KINDS)) == 1
        and set(spec) <= set(KINDS) | OPTION_KEYS
    )


def _dimension(key: str, spec: dict[str, Any], prefix: str, source: str) -> Dimension:
    where = f"{source} {key}"
    kind = next(k for k in KINDS if k in spec)
    name = f"{key}@{prefix}" if prefix else key
    extra = set(spec) - {kind}
    if kind == "choice":
        if extra:
            raise ConfigError(f"{where}: 'choice' takes no {', '.join(sorted(extra))}")
        return _choice(key, name, spec["choice"], prefix, where, source)
    bounds = spec[kind]
    if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2):
        raise ConfigError(f"{where}: {kind} needs [low, high], got {bounds!r}")
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
        raise ConfigError(f"{where}: {kind} bounds must be numbers, got {bounds!r}")
    low, high = bounds
    if not low < high:
        raise ConfigError(f"{where}: low {low} must be below high {high}")
    log = kind == "log_uniform" or bool(spec.get("log", False))
    if kind == "log_uniform" and "log" in spec:
        raise ConfigError(f"{where}: log_uniform is already logarithmic (drop 'log')")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        if not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0:
            raise ConfigError(f"{where}: step must be a positive number, got {step!r}")
        if log:
            raise ConfigError(f"{where}: step and a log scale cannot be combined")
        if step > high - low:
            raise ConfigError(f"{where}: step {step} is larger than the range {low}..{high}")
    if kind == "int":
        if not all(float(b).is_integer() for b in (low, high)) or (
            step is not None and not float(step).is_integer()
        ):
            raise ConfigError(f"{where}: int bounds and step must be whole numbers")
        return Dimension(key, "int", name, low=int(low), high=int(high), log=log,
                         step=int(step) if step else None)
    return Dimension(key, "float", name, low=float(low), high=float(high), log=log,
                     step=float(step) if step else None)


def _choice(key: str, name: str, raw: Any, prefix: str, where: str, source: str) -> Dimension:
    if isinstance(raw, dict):
        if not raw:
            raise ConfigError(f"{where}: choice needs at least one value")
        dim = Dimension(key, "choice", name, choices=list(raw))
        for value, settings in raw.items():
            settings = settings or {}
            if not isinstance(settings, dict):
                raise ConfigError(
                    f"{where}: the settings of choice {value!r} must be a mapping of "
                    f"'section.field: value-or-dimension', got {settings!r}"
                )
            fixed, subs = {}, []
            label = f"{prefix}/{value}" if prefix else str(value)
            for sub_key, sub_spec in settings.items():
                sub_key = str(sub_key)
                if _is_dimension(sub_spec):
                    subs.append(_dimension(sub_key, sub_spec, label, f"{where} -> {value}:"))
                else:
                    fixed[sub_key] = sub_spec
            for fixed_key in fixed:
                check_field(fixed_key)
            dim.branches[_encode(value)] = (fixed, subs)
        return dim
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ConfigError(f"{where}: choice needs a non-empty list (or a mapping), got {raw!r}")
    encoded = [_encode(v) for v in raw]
    if len(set(map(json.dumps, encoded))) != len(encoded):
        raise ConfigError(f"{where}: choice lists a value twice: {list(raw)!r}")
    return Dimension(key, "choice", name, choices=list(raw))


def _check_unique(dims: list[Dimension], source: str, outer: frozenset[str] = frozenset()) -> None:
    """No field searched twice on one path (a choice's settings may not redo an outer key)."""
    seen: set[str] = set()
    for dim in dims:
        if dim.key in seen or dim.key in outer:
            raise ConfigError(f"{source} {dim.key}: searched twice")
        seen.add(dim.key)
    for dim in dims:
        for fixed, subs in dim.branches.values():
            clash = ({s.key for s in subs} | set(fixed)) & (seen | outer)
            clash |= {s.key for s in subs} & set(fixed)
            if clash:
                raise ConfigError(
                    f"{source} {dim.key}: {', '.join(sorted(clash))} set twice (searched and "
                    "fixed, or searched outside and inside a choice)"
                )
            _check_unique(subs, source, frozenset(seen | outer))


def _walk(dims: list[Dimension]):
    for dim in dims:
        yield dim
        for _fixed, subs in dim.branches.values():
            yield from _walk(subs)


def _encode(value: Any) -> Any:
    return value if isinstance(value, _SCALARS) else json.dumps(value)


def _decode(dim: Dimension, encoded: Any) -> Any:
    for value in dim.choices:
        if _encode(value) == encoded:
            return value
    raise ConfigError(f"space {dim.key}: stored value {encoded!r} is not among its choices")


# --- sampling and grids ----------------------------------------------------------------------


class _Replay:
    """Stands in for an Optuna trial: answers ``suggest_*`` from stored parameters."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def _get(self, name: str) -> Any:
        if name not in self.params:
            raise ConfigError(f"stored trial has no value for {name}")
        return self.params[name]

    def suggest_categorical(self, name: str, _choices: list[Any]) -> Any:
        return self._get(name)

    def suggest_float(self, name: str, *_args: Any, **_kwargs: Any) -> Any:
        return self._get(name)

    def suggest_int(self, name: str, *_args: Any, **_kwargs: Any) -> Any:
        return self._get(name)


def _sample(dims: list[Dimension], trial: Any, params: dict, fixed: dict) -> None:
    for dim in dims:
        if dim.kind == "choice":
            encoded = trial.suggest_categorical(dim.name, dim.encoded_choices())
            params[dim.key] = _decode(dim, encoded)
            if encoded in dim.branches:
                branch_fixed, subs = dim.branches[encoded]
                fixed.update(copy.deepcopy(branch_fixed))
                _sample(subs, trial, params, fixed)
        elif dim.kind == "int":
            params[dim.key] = trial.suggest_int(
                dim.name, dim.low, dim.high, step=dim.step or 1, log=dim.log
            )
        else:
            params[dim.key] = trial.suggest_float(
                dim.name, dim.low, dim.high, step=dim.step, log=dim.log
            )


def _grid(dims: list[Dimension]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = [{}]
    for dim in dims:
        options: list[dict[str, Any]] = []
        for value in dim.grid_values():
            encoded = _encode(value) if dim.kind == "choice" else value
            subs = dim.branches.get(encoded, ({}, []))[1] if dim.kind == "choice" else []
            for sub in _grid(subs):
                options.append({dim.name: encoded, **sub})
        points = [{**p, **o} for p, o in itertools.product(points, options)]
    return points


# --- validation ------------------------------------------------------------------------------


def _validate(base: dict[str, Any], values: dict[str, Any], what: str) -> None:
    try:
        Recipe.from_dict(apply_values(base, values), source=f"the base recipe with {what}")
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None


def _validate_dims(dims: list[Dimension], base: dict[str, Any], context: dict[str, Any]) -> None:
    for dim in dims:
        if dim.kind == "choice":
            for value in dim.choices:
                values = {**context, dim.key: value}
                _validate(base, values, f"space {dim.key} = {value!r}")
                branch = dim.branches.get(_encode(value))
                if branch:
                    branch_fixed, subs = branch
                    values = {**values, **branch_fixed}
                    _validate(base, values, f"space {dim.key} = {value!r} and its settings")
                    _validate_dims(subs, base, values)
        else:
            for value in (dim.low, dim.high):
                _validate(base, {**context, dim.key: value}, f"space {dim.key} = {value!r}")


def _check_model_names(space: SearchSpace) -> None:
    names = [c for d in _walk(space.dimensions) if d.key == "model.name" for c in d.choices]
    if not names:
        return
    # lazy: seglab.models imports every model module (4.6 s on this loaded machine); only a
    # space that searches model.name needs it.
    from seglab.models import model_names

    known = model_names()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=3)
            hint = f" (close: {', '.join(close)})" if close else ""
            raise ConfigError(
                f"space model.name: unknown model {name!r}{hint}; see `seglab models list`"
            )
