"""``seglab compare``: several models on one split, benchmarked, one report."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from typing import Any

import typer

from seglab.cli import model_options, parse
from seglab.cli.output import console, fail, print_json, print_summary
from seglab.errors import SeglabError
from seglab.paths import RUNS_ROOT
from seglab.recipes import resolve_recipe


@model_options.takes_settings
def compare_command(
    models: list[str] = typer.Argument(
        ...,
        help="Registry model names (trained with one recipe) and/or saved models "
        "(evaluated as they are): " + model_options.MODEL_SOURCES + ". --mean, --std, --scale, "
        "--channels, --classes, --num-classes, --model and --size apply to the model files "
        "(.onnx, TorchScript, state dicts); folders and .ckpt keep their own.",
    ),
    data: str = typer.Option(
        ..., "--data", help="Dataset spec, e.g. camvid:../shared/data/camvid11."
    ),
    recipe: str | None = typer.Option(None, "--recipe", help="Shared recipe (file or name)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Recipe override key=value (repeatable)."
    ),
    name: str = typer.Option(
        "compare", "--name", help="Writes runs/NAME/<model>/ and runs/NAME/compare/."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs per model."),
    split: str = typer.Option("test", "--split", help="Split every model is scored on."),
    gallery: int = typer.Option(4, "--gallery", help="Images in the prediction gallery."),
    runs_root: str = typer.Option(str(RUNS_ROOT), "--runs-root", help="Folder holding the runs."),
    jobs: int = typer.Option(
        1, "--jobs", "-j", help="Trainings at once, each in its own process with an equal "
        "share of the CPU threads (faster for small models on a CPU; output in runs/NAME/logs/).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print results.json instead of a table."),
    size: str | None = typer.Option(None, "--size", help="Input size HxW of the model files."),
    seeds: int = typer.Option(
        1, "--seeds", help="Train each registry model with trainer.seed 0..N-1 and summarise "
        "mean ± std over the seeds (finished runs reused).",
    ),
    settings: Any = None,  # the model options (model_options.takes_settings)
) -> None:
    """Train or reuse several models on one data split, benchmark them and write a report."""
    # lazy: seglab.compare takes ~12 s to import (loaded 2-core CPU), which every
    # "seglab --help" would pay: cli/main imports each verb's module.
    from seglab.compare import compare

    progress = (lambda msg: print(msg, file=sys.stderr)) if json_out else console.print
    settings = replace(settings, size=parse.size(size, "--size"))
    try:
        outcome = compare(
            models,
            data,
            recipe=str(resolve_recipe(recipe)) if recipe else None,  # a name or a file
            overrides=overrides,
            name=name,
            epochs=epochs,
            runs_root=runs_root,
            split=split,
            gallery_size=gallery,
            command=shlex.join(["seglab", "compare", *sys.argv[2:]]),
            jobs=jobs,
            progress=progress,
            settings=settings,
            seeds=seeds,
        )
    except SeglabError as exc:
        fail(str(exc))
    if json_out:
        print_json(outcome.report.document)
        return
    print_summary(outcome.results)
    if outcome.significance:
        for pair in outcome.significance["pairs"]:
            console.print(pair["text"])
        console.print(f"ranking (braces: not distinguishable): {outcome.significance['ranking']}")
    for row in (outcome.seeds or {}).values():
        console.print(row.get("text", ""))
    console.print(f"report: {outcome.report.html} (also report.md, results.json)", style="bold")

