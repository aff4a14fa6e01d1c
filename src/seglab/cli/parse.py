"""The CLI's one set of parsers for option text: sizes, scales, number lists, KEY=VALUE pairs.

Each parser names the option and the text it could not read (through ``output.fail``), so every
verb reports a bad value the same way.
"""

from __future__ import annotations

import json
from typing import Any

from seglab.cli.output import fail


def size(text: str | None, option: str = "--input") -> tuple[int, int] | None:
    """``"512"`` or ``"360x480"`` (height x width) -> ``(h, w)``; None stays None."""
    if text is None:
        return None
    parts = text.lower().replace("*", "x").replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        fail(f"{option} must be a size like 512 or 360x480 (height x width), got {text!r}")
    return values[0], values[-1]


def scales(text: str | None, option: str = "--scales") -> tuple[float, ...] | None:
    """``"0.75,1,1.25"`` -> positive floats; None stays None."""
    if text is None:
        return None
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        fail(f"{option} must be positive numbers like 0.75,1,1.25, got {text!r}")
    return values


def int_list(text: str, option: str) -> list[int]:
    """``"1,8"`` -> ``[1, 8]`` (positive integers)."""
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        fail(f"{option} must be comma-separated positive integers like 1,8, got {text!r}")
    return values


def key_values(items: list[str] | None, option: str, *, typed: bool = False) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; ``typed`` reads each value as JSON.

    With ``typed``, a value that is not JSON (``resnet18``) stays text, so ``bins=[1,2,4]``
    becomes a list and ``backbone=resnet18`` a string.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            fail(f"{option} {item!r}: expected KEY=VALUE")
        if typed:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        else:
            out[key] = value
    return out


def float_values(pairs: dict[str, Any], option: str) -> dict[str, float]:
    """Values of KEY=VALUE pairs that must be numbers (``--weight-param c=1.02``)."""
    out: dict[str, float] = {}
    for key, value in pairs.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            fail(f"{option} {key}={value!r}: the value must be a number")
    return out
