"""The comparison table: one row per model, columns defined once for HTML, Markdown and JSON."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seglab.metrics import MIOU, PIXEL_ACC, Metric, registered_metrics
from seglab.report.runs import ModelResult


@dataclass(frozen=True)
class Column:
    """One table column: how to read the value, how to print it, which direction is better."""

    key: str
    title: str
    read: Callable[[ModelResult], float | None]
    fmt: Callable[[float], str]
    better: str | None = None  # "high", "low" or None (not ranked)


def _metric(key: str) -> Callable[[ModelResult], float | None]:
    def read(result: ModelResult) -> float | None:
        value = result.metrics.get(key)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    return read


def _bench(key: str) -> Callable[[ModelResult], float | None]:
    def read(result: ModelResult) -> float | None:
        value = result.bench.get(key)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    return read


def _millions(value: float) -> str:
    return f"{value / 1e6:.2f}"


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:.{digits}f}"


def format_duration(seconds: float) -> str:
    """Seconds as ``42s``, ``3m05s`` or ``1h02m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _score_column(metric: Metric) -> Column:
    better = "high" if metric.direction == "higher" else "low"
    return Column(metric.key, metric.title, _metric(metric.key), metric.format, better)


def accuracy_columns() -> tuple[Column, ...]:
    """One column per metric the registry shows in the report (read when called, so a metric
    registered after import has its column)."""
    return tuple(_score_column(m) for m in registered_metrics("report"))


COST_COLUMNS = (
    Column("params", "Params (M)", _bench("params"), _millions, "low"),
    Column("size_mb", "Size (MB)", _bench("size_mb"), _fixed(1), "low"),
    Column("gflops", "GFLOPs", _bench("gflops"), _fixed(1), "low"),
    Column("latency_ms", "Latency (ms)", _bench("latency_ms"), _fixed(1), "low"),
    Column("gpu_mem_mb", "GPU mem (MB)", _bench("gpu_mem_mb"), _fixed(0), "low"),
    Column("train_time_s", "Train time", lambda r: r.train_time_s, format_duration, "low"),
)


# The columns `seglab compare` prints (the report holds all of them).
SUMMARY_KEYS = (MIOU, PIXEL_ACC, "params", "gflops", "latency_ms", "train_time_s")


def all_columns() -> tuple[Column, ...]:
    """The accuracy columns, then the cost columns."""
    return accuracy_columns() + COST_COLUMNS


def active_columns(results: list[ModelResult]) -> list[Column]:
    """Columns with at least one value (GPU memory only appears when a GPU was used)."""
    return [c for c in all_columns() if any(c.read(r) is not None for r in results)]


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None
    best: bool


def table_rows(results: list[ModelResult], columns: list[Column]) -> list[list[Cell]]:
    """Formatted cells per model; ``best`` marks the best value of each ranked column."""
    bests: dict[str, float] = {}
    for column in columns:
        values = [v for v in (column.read(r) for r in results) if v is not None]
        if column.better and len(values) > 1:
            bests[column.key] = max(values) if column.better == "high" else min(values)
    rows = []
    for result in results:
        row = []
        for column in columns:
            value = column.read(result)
            text = column.fmt(value) if value is not None else "–"
            row.append(Cell(text, value, value is not None and bests.get(column.key) == value))
        rows.append(row)
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, score) points no other point beats (lower cost and higher score).

    Returned in order of increasing cost, ready to draw as a step line.
    """
    front = []
    for i, (cost, score) in enumerate(points):
        dominated = any(
            (c <= cost and s >= score) and (c < cost or s > score)
            for j, (c, s) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def pareto_labels(results: list[ModelResult]) -> list[str]:
    """Labels of the models on the mIoU-vs-latency Pareto front (incomplete models left out)."""
    usable = [
        r
        for r in results
        if isinstance(r.metrics.get(MIOU), (int, float)) and r.bench.get("latency_ms")
    ]
    points = [(float(r.bench["latency_ms"]), float(r.metrics[MIOU])) for r in usable]
    return [usable[i].label for i in pareto_front(points)]


def markdown_table(header: list[str], rows: list[list[str]], escape: bool = True) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the rest right-aligned).

    Cells are user text too (class names, model labels): HTML in them is escaped, since
    Markdown renderers pass HTML through (``escape=False``: the caller escaped them)."""
    if escape:
        header = [html.escape(cell, quote=False) for cell in header]
        rows = [[html.escape(cell, quote=False) for cell in row] for row in rows]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def comparison_markdown(results: list[ModelResult]) -> str:
    """The comparison table in Markdown, best value of each column in bold."""
    columns = active_columns(results)
    header = ["Model"] + [c.title for c in columns]
    body = []
    for result, cells in zip(results, table_rows(results, columns), strict=True):
        body.append([result.label] + [f"**{c.text}**" if c.best else c.text for c in cells])
    return markdown_table(header, body)


def per_class_markdown(results: list[ModelResult], names: list[str]) -> str:
    """Per-class IoU (%) table in Markdown: one row per class, one column per model."""
    header = ["Class"] + [r.label for r in results]
    scores = [r.per_class_iou(names) for r in results]
    body = []
    for index, name in enumerate(names):
        body.append(
            [name] + [f"{100 * s[index]:.1f}" if math.isfinite(s[index]) else "–" for s in scores]
        )
    return markdown_table(header, body)


def summary_record(result: ModelResult, pareto: set[str]) -> dict[str, Any]:
    """One model's entry in results.json."""
    metrics = {k: v for k, v in result.metrics.items() if k != "per_class"}
    return {
        "label": result.label,
        "source": result.source,
        "status": result.status,
        "metrics": metrics,
        "per_class": result.metrics.get("per_class", {}),
        "bench": result.bench,
        "train_time_s": result.train_time_s,
        "epochs": result.epochs,
        "pareto_optimal": result.label in pareto,
    }
