"""``seglab train``: train or fine-tune a recipe into a run folder (or resume one)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from seglab.cli.output import console, fail, print_json, print_kfold, print_metrics
from seglab.paths import RUNS_ROOT

if TYPE_CHECKING:
    from seglab.engine.run_result import FitResult


def train(
    recipe: str | None = typer.Argument(
        None,
        help="Recipe YAML or a shipped recipe's name (seglab recipes list). Omit it with "
        "--resume to continue a run as saved, or give every required field as overrides.",
    ),
    overrides: list[str] | None = typer.Argument(
        None,
        help="Recipe overrides 'section.field=value' (YAML values), e.g. optim.lr=0.02 "
        "augment.crop_size=[360,480] model.options.weights=null.",
        show_default=False,
    ),
    name: str | None = typer.Option(None, help="Run name (default: the recipe's name)."),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help=f"Run folder [default: {RUNS_ROOT}/<name>]."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in the run folder from checkpoints/last.ckpt."
    ),
    fp32: bool = typer.Option(
        False, "--fp32", help="Train in float32 (default auto: bf16 where faster, see README)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
) -> None:
    """Train a model from a recipe; writes runs/<name>/ and scores the best weights on test."""
    # lazy: the engine loads torch and Lightning (seconds), which "seglab --help" must not wait for
    from seglab.artifacts import rundir
    from seglab.config import Recipe, check_run_name
    from seglab.engine import fit
    from seglab.engine.distributed import finish, is_rank_zero
    from seglab.errors import SeglabError
    from seglab.paths import default_run_dir
    from seglab.recipes import resolve_recipe  # a shipped recipe's name or a file

    # typer gives a lone override in the recipe slot when no recipe file is named.
    extra = list(overrides or [])
    if recipe is not None and "=" in recipe and not recipe.endswith((".yaml", ".yml")):
        extra.insert(0, recipe)
        recipe = None
    if fp32:
        extra.append("trainer.precision=fp32")
        extra.append("trainer.channels_last=false")
    try:
        if recipe is None and resume:
            if run_dir is None and name is None:
                fail("--resume without a recipe needs --run-dir (or --name) of the run")
            folder = run_dir or default_run_dir(str(name))
            cfg = Recipe.from_yaml(rundir.recipe_path(folder), extra)
        else:
            cfg = Recipe.from_yaml(resolve_recipe(recipe) if recipe else recipe, extra)
        if name is not None:
            try:
                check_run_name(name)
            except ValueError as exc:
                fail(f"--name: {exc}")
            cfg.name = name
        # fit locks the folder (rank 0 alone: DDP's other processes re-run this command).
        result = fit(cfg, run_dir or default_run_dir(cfg.name), resume=resume)
        if is_rank_zero():  # one report, not one per process
            _report(result, as_json)
    except SeglabError as exc:
        fail(str(exc))
    finally:
        finish()  # under torchrun: the process group, before the interpreter tears down


def _report(result: FitResult, as_json: bool) -> None:
    if result.folds:
        doc, show = result.metrics, print_kfold
    elif result.scored:
        doc, show = result.metrics, print_metrics
    else:
        console.print(f"run written to {result.run_dir}")
        return
    if as_json:
        print_json(doc)
        return
    show(doc)
    console.print(f"run folder: {result.run_dir}")
