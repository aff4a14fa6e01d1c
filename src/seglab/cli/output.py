"""Shared CLI output: one JSON document on stdout, clear errors on stderr, the shared tables.

Both consoles print text literally (``markup=False``): paths and messages may hold ``[...]``,
which rich would otherwise read as style tags and drop or fail on. Style goes through
``style=`` and ``rich.text.Text``, never through markup in a string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from seglab.cli.json_mode import document_stream
from seglab.errors import SeglabError
from seglab.io_utils import json_safe
from seglab.stops import Stopped, catch_stops

if TYPE_CHECKING:
    from seglab.metrics import Metric

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

console = Console(stderr=False, markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None] | None]:
    """A transient stderr bar per task, fed by the library's ``progress(task, done, total)``.

    None when stderr is not a terminal: a bar there would only leave blank lines in logs.
    """
    if not err_console.is_terminal:
        yield None
        return
    with Progress(console=err_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done)

        yield update


def list_providers(value: str | None) -> str | None:
    """``--provider list``: print the ONNX Runtime execution providers installed, then exit."""
    if value == "list":
        # lazy: it loads torch (4.2 s measured on a loaded 2-core machine), for this flag only
        from seglab.artifacts.runtimes import available_providers

        names = available_providers()
        console.print("\n".join(names) if names else "ONNX Runtime is not installed")
        raise typer.Exit(0)
    return value


def print_json(document: Any) -> None:
    """Print one JSON document to stdout (NaN/inf written as null)."""
    document_stream().write(json.dumps(json_safe(document), indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a plain-words error to stderr and exit non-zero.

    Never wrapped at the console width: a path cut in two at a line end could not be copied.
    Terminal escape sequences inside the message (from a library's text, or a file name) are
    dropped and other control characters shown escaped, so the message cannot restyle or
    rewrite the user's terminal.
    """
    text = _ANSI_ESCAPE.sub("", str(message))
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    err_console.print(Text.assemble(("error: ", "bold red"), text), soft_wrap=True)
    raise typer.Exit(code)


def os_error_line(exc: OSError) -> str:
    """One line for a failed system call: what failed, on which path (read-only folder, full
    disk, permission denied), never a traceback."""
    reason = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    hint = {28: " (the disk is full: free space or write elsewhere)",
            30: " (the filesystem is read-only)",
            13: " (permission denied: check the folder's owner and mode)"}.get(exc.errno or 0, "")
    where = " -> ".join(paths) if paths else "a file (the system did not say which)"
    return f"{where}: {reason}{hint}"


def stopped(message: str, code: int) -> NoReturn:
    """One line on stderr for a run ended by a signal, and the shell's code for it."""
    err_console.print(Text(message, style="yellow"), soft_wrap=True)
    raise typer.Exit(code)


class ErrorHandlingGroup(TyperGroup):
    """The root command: an error a verb did not turn into a message still becomes one.

    A ``SeglabError`` (even one re-raised from a DataLoader worker: its message is the
    original one, see ``seglab.errors``) prints as ``error: <message>`` with exit code 1;
    running out of memory says so and what to shrink, instead of an allocator traceback.
    SIGINT (Ctrl-C) and SIGTERM end any verb with one line and exit code 130 / 143
    (``seglab.stops``; training first saves a checkpoint and names how to resume).
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            with catch_stops():
                return super().invoke(ctx)
        except Stopped as exc:
            stopped(exc.message, exc.exit_code)
        except KeyboardInterrupt:  # before the handler was installed, or outside it
            stopped("stopped by SIGINT", 130)
        except SeglabError as exc:
            fail(str(exc))
        except OSError as exc:
            if exc.errno is None:  # not a system call's error: keep its traceback
                raise
            fail(os_error_line(exc))
        except MemoryError as exc:
            fail(f"out of memory ({exc or 'host memory'}): use a smaller batch or input size")
        except RuntimeError as exc:
            # torch's OutOfMemoryError (a GPU), or its CPU allocator's plain RuntimeError
            cpu_oom = "can't allocate memory" in str(exc) or "not enough memory" in str(exc)
            if type(exc).__name__ != "OutOfMemoryError" and not cpu_oom:
                raise
            first = str(exc).splitlines()[0] if str(exc) else "device memory"
            fail(f"out of memory ({first}): use a smaller batch or input size, or --device cpu")


def print_wide(renderable: Any, width: int = 170) -> None:
    """Print a wide table; piped output (files, CI logs) would otherwise be cut to 80 columns."""
    if console.is_terminal:
        console.print(renderable)
        return
    saved = console.width
    console.width = width
    try:
        console.print(renderable)
    finally:
        console.width = saved


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _percent(value: Any, metric: Metric | None = None) -> str:
    """A score with two decimals (x100 unless ``metric`` is a plain number); ``-`` if absent."""
    if _missing(value):
        return "-"
    return metric.format(value, 2) if metric is not None else f"{100 * value:.2f}"


def _with_interval(value: Any, interval: Any, metric: Metric | None = None) -> str:
    """``48.6 [46.9, 50.2]`` (percent), or the plain value when there is no interval."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2 or None in interval:
        return _percent(value, metric)
    if _missing(value):
        return "-"
    show = metric.format if metric is not None else (lambda v, digits: f"{100 * v:.{digits}f}")
    return f"{show(value, 1)} [{show(interval[0], 1)}, {show(interval[1], 1)}]"


def _summary_line(doc: dict[str, Any], ci: dict[str, Any], metrics: list[Metric]) -> str | None:
    """``mIoU 48.6 [46.9, 50.2]  pixel acc ...``: the values of ``metrics``, or None when the
    document has none of them (e.g. boundary scores off)."""
    if not any(m.key in doc for m in metrics):
        return None
    return "  ".join(f"{m.short} {_with_interval(doc.get(m.key), ci.get(m.key), m)}"
                     for m in metrics)


def print_metrics(doc: dict[str, Any]) -> None:
    """Per-class table and headline scores of a metrics document (``seglab eval`` / ``train``).

    With bootstrap intervals (``ci``) the IoU column and mIoU read ``48.6 [46.9, 50.2]``; with
    boundary scores (``boundary``) a Boundary IoU and a BF column are added. The lines under
    the table show the registry's ``console`` metrics, one line per source of counts.
    """
    # lazy: the metric registry loads numpy, 0.2 s of the 0.6 s "seglab --help" takes (loaded
    # 2-core machine), which every verb importing this module would pay
    from seglab.metrics import SOURCES, registered_metrics

    ci = doc.get("ci") or {}
    ci_class = ci.get("per_class") or {}
    edges = (doc.get("boundary") or {}).get("per_class") or {}
    table = Table(title=f"{doc.get('split', '')} split, {doc.get('num_images', '?')} images "
                        "(scores in %)")
    extra = ("bIoU", "BF") if edges else ()
    for column in ("class", "IoU", "Acc", "Dice", "Prec", "Rec", *extra, "pixels"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in doc["per_class"].items():
        edge = edges.get(name) or {}
        table.add_row(
            name,
            _with_interval(row["iou"], (ci_class.get(name) or {}).get("iou")),
            *(_percent(row[key]) for key in ("acc", "dice", "precision", "recall")),
            *((_percent(edge.get("boundary_iou")), _percent(edge.get("bf"))) if edges else ()),
            str(row["support"]),
        )
    print_wide(table, width=120)  # piped output keeps the "[low, high]" cells on one line
    for source in SOURCES:
        line = _summary_line(doc, ci, registered_metrics("console", source))
        if line is not None:
            console.print(line)
    if ci.get("level"):
        console.print(
            f"[low, high]: {100 * ci['level']:g}% bootstrap interval over the "
            f"{doc.get('num_images', '?')} images ({ci.get('resamples')} resamples)"
        )
    if doc.get("classes_excluded_from_mean"):
        excluded = ", ".join(doc["classes_excluded_from_mean"])
        console.print(f"not in truth or prediction, left out of the means: {excluded}")


def print_kfold(doc: dict[str, Any]) -> None:
    """Mean and std per metric over the folds of a ``kfold.json`` document."""
    from seglab.metrics import find_metric  # lazy: numpy, see print_metrics

    table = Table(title=f"{doc['folds']}-fold cross-validation")
    for column in ("metric", "mean", "std", *(f"fold {i}" for i in range(doc["folds"]))):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, stats in doc["metrics"].items():
        metric = find_metric(key)
        table.add_row(key, *(_percent(v, metric) for v in (stats["mean"], stats["std"],
                                                           *stats["values"])))
    console.print(table)


def print_summary(results: list) -> None:
    """The key columns of a comparison as a table (the report holds all of them)."""
    # lazy: the report package loads torch and matplotlib (19 s measured on a loaded 2-core
    # machine), which every other verb that prints through this module would pay at start
    from seglab.report.tables import SUMMARY_KEYS, all_columns, table_rows

    columns = [c for c in all_columns() if c.key in SUMMARY_KEYS]
    table = Table(title="Comparison (best in bold)")
    table.add_column("Model", no_wrap=True)
    for column in columns:
        table.add_column(column.title, justify="right")
    table.add_column("run", min_width=9)
    for result, cells in zip(results, table_rows(results, columns), strict=True):
        texts = [Text(c.text, style="bold green" if c.best else "") for c in cells]
        table.add_row(result.label, *texts, result.status)
    print_wide(table)
