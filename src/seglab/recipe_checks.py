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


def batch_limit(value: float | None) -> float | None:
    """``trainer.limit_train_batches``: a fraction in (0, 1] or a batch count >= 1."""
    if isinstance(value, float) and not 0 < value <= 1:
        raise ValueError(f"a fraction must be in (0, 1], got {value}")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"a batch count must be >= 1, got {value}")
    return value


def device_list(value: int | str) -> int | str:
    """``trainer.devices``: ``auto``, a count >= 1 (-1: all) or ids like ``0,1``."""
    if isinstance(value, int):
        if value < -1 or value == 0:
            raise ValueError(f"a device count is >= 1 (or -1 for all), got {value}")
        return value
    text = value.strip()
    if text == "auto" or text.lstrip("-").isdigit():
        return text
    ids = [part.strip() for part in text.strip("[]").split(",") if part.strip()]
    if not ids or not all(part.isdigit() for part in ids):
        raise ValueError(f"devices is 'auto', a count or ids like '0,1', got {value!r}")
    return text


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
