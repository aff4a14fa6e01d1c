"""``seglab demo``: synthetic data, three small models, a report, in minutes on a laptop CPU.

Each model trains a fixed number of epochs (no time cap), so a busy machine changes how long
the demo takes, not its scores."""

from __future__ import annotations

import typer

from seglab.cli.output import console, err_console, fail, print_json, print_summary
from seglab.paths import RUNS_ROOT


def demo_command(
    out: str = typer.Option(
        str(RUNS_ROOT / "demo"), "--out", help="Folder for the data, runs and report."
    ),
    epochs: int = typer.Option(
        None, "--epochs", help="Training epochs per model, a fixed count (default: 30)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report's results.json."),
) -> None:
    """Generate a synthetic dataset, compare three small models and write the HTML report."""
    from seglab.demo import run_demo
    from seglab.errors import SeglabError

    try:
        outcome = run_demo(out, epochs=epochs,
                           progress=err_console.print if as_json else console.print)
    except SeglabError as exc:
        fail(str(exc))
    if as_json:
        print_json(outcome.report.document)
        return
    print_summary(outcome.results)
    console.print(f"Open the report: {outcome.report.html}", style="bold")
