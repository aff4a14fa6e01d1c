"""Checks of recipe values that pydantic's field types cannot say: finite numbers, sizes,
run names. Kept apart from ``config`` so that module stays a readable list of fields."""

from __future__ import annotations

import math
from typing import Any

from seglab.errors import ConfigError
from seglab.yaml_limits import short_repr

Size = tuple[int, int]


def positive_size(value: Size | None) -> Size | None:
    """``value`` when both sides are >= 1; ValueError otherwise."""
    # A 0 or negative crop / resize / window fails only deep inside training or evaluation.
    if value is not None and min(value) < 1:
        raise ValueError(f"sizes must be positive (height, width), got {list(value)}")
    return value


def check_run_name(name: str) -> None:
    """A run name must be one folder name: it becomes ``runs/<name>`` and must stay there."""
    if not name or name.strip() != name or name in (".", "..") or "/" in name or "\\" in name \
            or "\x00" in name:
        raise ValueError(f"run name {short_repr(name)} must be one folder name (not empty, "
                         "no '/', '\\', '..' or surrounding spaces)")


def non_finite_keys(data: Any, prefix: str = "", depth: int = 0) -> list[str]:
    """Dotted keys of every NaN/inf number in ``data`` (nested mappings and lists).

    Nesting deeper than 32 levels (a recursive YAML alias, ``a: &a [*a]``) is a ConfigError.
    """
    if depth > 32:
        raise ConfigError(f"{prefix or 'value'} is nested more than 32 levels deep (a recursive "
                          "YAML alias?)")
    if isinstance(data, float):
        return [] if math.isfinite(data) else [f"{prefix or 'value'}={data}"]
    if isinstance(data, dict):
        return [bad for key, value in data.items()
                for bad in non_finite_keys(value, f"{prefix}.{key}" if prefix else str(key),
                                           depth + 1)]
    if isinstance(data, (list, tuple)):
        return [bad for i, value in enumerate(data)
                for bad in non_finite_keys(value, f"{prefix}[{i}]", depth + 1)]
    return []
