"""``seglab study run|show|best``: hyper-parameter searches and sweeps over recipes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from seglab.cli.output import console, err_console, fail, print_json, print_wide

study_app = typer.Typer(
    rich_markup_mode=None,  # help text prints literally: [default: ...] and paths stay
    help="Studies: Optuna searches and grid sweeps over recipes, one run folder per trial.",
    no_args_is_help=True,
)

_STYLE = {"trial_start": "bold", "trial_end": "bold green", "note": "yellow", "done": "bold"}


def _printer(stream: Any) -> Any:
    """Progress lines: to stdout, or to stderr when stdout carries the JSON document."""

    def show(event: Any) -> None:
        style = _STYLE.get(event.kind, "")
        if event.kind == "trial_end" and event.data.get("state") != "COMPLETE":
            style = "bold red" if event.data.get("state") == "FAIL" else "magenta"
        stream.print(Text(event.message, style=style), soft_wrap=True)

    return show


@study_app.command("run")
def run_command(
    study_file: str = typer.Argument(
        ..., help="Study YAML, or a shipped study's name (seglab recipes list --studies)."
    ),
    name: str | None = typer.Option(None, "--name", help="Study name (default: the file's)."),
    trials: int | None = typer.Option(
        None, "--trials", min=1, help="Finished trials to reach (complete + pruned)."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.01, help="Stop starting new trials after MIN minutes."
    ),
    storage: str | None = typer.Option(
        None, "--storage",
        help="Optuna storage: a SQLAlchemy URL (postgresql://...) or a journal file "
        "(journal:PATH); default: OUT/NAME/study.db. Workers sharing one storage run one study.",
    ),  # fmt: skip
    out: Path = typer.Option(Path("studies"), "--out", help="Folder holding the studies."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Base-recipe override key=value (repeatable), e.g. data.spec=..."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
) -> None:
    """Run a study, or continue it: the same command again picks up where it stopped."""
    from seglab.errors import SeglabError
    from seglab.recipes import resolve_recipe
    from seglab.study import run_study

    progress = _printer(err_console if json_out else console)
    try:
        outcome = run_study(
            resolve_recipe(study_file, kind="study"), name=name, trials=trials,
            timeout_min=timeout, storage=storage, out=out, overrides=overrides, progress=progress,
        )  # fmt: skip
    except SeglabError as exc:
        fail(str(exc))
    if json_out:
        print_json(outcome.results)
        return
    _print_table(outcome.results)
    console.print(f"report: {outcome.files['report']}", style="bold")
    if "best_recipe" in outcome.files:
        from seglab.study.report import train_command

        console.print(f"best recipe: {outcome.files['best_recipe']} (train it again: "
                      f"{train_command(outcome.files['best_recipe'])})")


@study_app.command("show")
def show_command(
    study: str = typer.Argument(..., help="Study name (under --out) or study folder."),
    out: Path = typer.Option(Path("studies"), "--out", help="Folder holding the studies."),
    json_out: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
) -> None:
    """Show a study's trials, best first (from its results.json)."""
    from seglab.errors import SeglabError
    from seglab.study import load_results

    try:
        results = load_results(study, out)
    except SeglabError as exc:
        fail(str(exc))
    if json_out:
        print_json(results)
        return
    _print_table(results)
    console.print(f"report: {Path(results['study_dir']) / 'report.html'}")


@study_app.command("best")
def best_command(
    study: str = typer.Argument(..., help="Study name (under --out) or study folder."),
    out: Path = typer.Option(Path("studies"), "--out", help="Folder holding the studies."),
    write: Path | None = typer.Option(
        None, "--write", help="Also write the best recipe to this YAML file."
    ),
) -> None:
    """Print the best trial's recipe (YAML, ready for `seglab train`)."""
    from seglab.errors import SeglabError
    from seglab.io_utils import atomic_write_text
    from seglab.study import best_recipe_path

    try:
        text = best_recipe_path(study, out).read_text()
    except SeglabError as exc:
        fail(str(exc))
    sys.stdout.write(text)
    if write is not None:
        atomic_write_text(write, text)
        err_console.print(f"written to {write}")


def _print_table(results: dict[str, Any]) -> None:
    from rich.table import Table

    from seglab.study.seeded import seed_text
    from seglab.units import score_text

    objectives = results["objectives"]
    first = objectives[0]["metric"]
    spread = {t["number"]: seed_text((t.get("metrics") or {}).get("seed_summary"), first)
              for t in results["trials"]}  # fmt: skip
    seeded = any(spread.values())
    keys = list(dict.fromkeys(k for t in results["trials"] for k in t["params"]))
    counts = results["counts"]
    title = (
        f"Study {results['name']}: {results['finished']}/{results['target']} finished "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed)"
    )
    table = Table(title=title)
    table.add_column("trial", justify="right")
    table.add_column("state")
    for objective in objectives:
        table.add_column(objective["metric"], justify="right")
    if seeded:
        table.add_column(f"{first} over seeds: mean ± std [95%]", justify="right")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("time s", justify="right")
    best = (results.get("best") or {}).get("number")
    for trial in results["trials"]:
        values = [trial.get("value")] if "value" in trial else (trial.get("values") or [None])
        cells = [score_text(o["metric"], v) for o, v in zip(objectives, values, strict=False)]
        cells += ["-"] * (len(objectives) - len(cells))
        cells += [spread[trial["number"]] or "-"] if seeded else []
        cells += [_cell(trial["params"].get(k)) for k in keys]
        time_s = trial.get("time_s")
        style = "bold green" if trial["number"] == best else ""
        table.add_row(str(trial["number"]), trial["state"], *cells, _cell(trial.get("epochs")),
                      f"{time_s:.0f}" if time_s is not None else "-", style=style)  # fmt: skip
    print_wide(table)
    pruning = results.get("pruning") or {}
    if pruning.get("pruned"):
        saved = pruning.get("estimated_saved_s")
        note = f", about {saved:.0f} s of training saved (estimate)" if saved else ""
        console.print(f"{pruning['pruned']} trials pruned{note}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
