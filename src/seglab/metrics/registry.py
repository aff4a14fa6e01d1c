"""One registry for every dataset-level score: its key, label, format, direction and where
it is shown.

A metric is a function registered with :func:`register_metric`: of a
:class:`~seglab.metrics.counts.ClassCounts` (``source="confusion"``, the default: the
evaluation's confusion matrix) or of the per-image boundary counts ``[N, 7, C]``
(``source="boundary"``, see :mod:`seglab.metrics.boundary`). Metric modules register beside
their code and the package face imports them; this module knows none of them. The evaluation
document, ``seglab eval``'s summary line, the report's table, the k-fold summary and the study
objectives all read this registry, each choosing the metrics ``shown_in`` its place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

SOURCES = ("confusion", "boundary")
FORMATS = ("percent", "plain")
DIRECTIONS = ("higher", "lower")
# Where a metric appears: the line `seglab eval` prints, the report's comparison table, the
# k-fold summary (kfold.json), the metrics a study may optimise.
PLACES = ("console", "report", "folds", "objective")

ScoreFn = TypeVar("ScoreFn", bound=Callable[..., float])


@dataclass(frozen=True)
class Metric:
    """A registered score (see the module docstring)."""

    key: str  # in metrics.json, e.g. "miou"
    label: str  # the report's column, e.g. "mIoU" (a percent adds " %")
    short: str  # seglab eval's summary line, e.g. "mIoU"
    compute: Callable[[Any], float]
    source: str = "confusion"
    fmt: str = "percent"  # a fraction shown x100, or a plain number
    direction: str = "higher"
    shown_in: frozenset[str] = frozenset(PLACES)

    @property
    def title(self) -> str:
        """The column heading: the label, with its unit."""
        return f"{self.label} %" if self.fmt == "percent" else self.label

    def format(self, value: float, digits: int = 1) -> str:
        """``value`` as shown: a percent with ``digits`` decimals, else two more decimals."""
        if self.fmt == "percent":
            return f"{100 * value:.{digits}f}"
        return f"{value:.{digits + 2}f}"


_REGISTRY: dict[str, Metric] = {}


def _check(name: str, value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ValueError(f"metric {key!r}: {name} must be one of {', '.join(allowed)}, "
                         f"got {value!r}")


def register_metric(
    key: str,
    label: str,
    *,
    short: str | None = None,
    source: str = "confusion",
    fmt: str = "percent",
    direction: str = "higher",
    shown_in: tuple[str, ...] = PLACES,
) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator: register ``fn(counts) -> float`` as the score ``key``.

    ``short`` is its name on ``seglab eval``'s summary line (default: ``label``); ``shown_in``
    the places of :data:`PLACES` it appears in. A key is registered once.
    """
    _check("source", source, SOURCES, key)
    _check("fmt", fmt, FORMATS, key)
    _check("direction", direction, DIRECTIONS, key)
    for place in shown_in:
        _check("a place", place, PLACES, key)
    if not key.isidentifier():
        raise ValueError(f"metric key {key!r} must be a name (letters, digits, underscores)")

    def register(fn: ScoreFn) -> ScoreFn:
        if key in _REGISTRY:
            raise ValueError(f"metric {key!r} is registered twice")
        _REGISTRY[key] = Metric(key, label, short or label, fn, source, fmt, direction,
                                frozenset(shown_in))
        return fn

    return register


def unregister_metric(key: str) -> None:
    """Remove the metric ``key`` (a plugin unloading, a test cleaning up)."""
    if _REGISTRY.pop(key, None) is None:
        raise ValueError(f"metric {key!r} is not registered")


def registered_metrics(place: str | None = None, source: str | None = None) -> list[Metric]:
    """The metrics shown in ``place`` / computed from ``source``: those of the confusion
    matrix first, then those of boundary counts, each in registration order."""
    chosen = [m for m in _REGISTRY.values()
              if (place is None or place in m.shown_in) and (source is None or m.source == source)]
    return sorted(chosen, key=lambda m: SOURCES.index(m.source))


def metric_keys(place: str | None = None) -> tuple[str, ...]:
    """The keys of :func:`registered_metrics` (``place``: one of :data:`PLACES`)."""
    return tuple(m.key for m in registered_metrics(place))


def find_metric(key: str) -> Metric | None:
    """The metric registered as ``key``, or None."""
    return _REGISTRY.get(key)
