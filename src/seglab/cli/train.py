"""``seglab train``: train or fine-tune a recipe into a run folder (or resume one)."""

from __future__ import annotations

from pathlib import Path

import typer

from seglab.cli.output import console, fail, print_json, print_kfold, print_metrics


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
        None, "--run-dir", help="Run folder [default: runs/<name>]."
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
    from seglab.artifacts import rundir
    from seglab.config import Recipe
    from seglab.errors import SeglabError

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
            folder = run_dir or Path("runs") / str(name)
            cfg = Recipe.from_yaml(rundir.recipe_path(folder), extra)
        else:
            from seglab.recipes import resolve_recipe  # a shipped recipe's name or a file

            cfg = Recipe.from_yaml(resolve_recipe(recipe) if recipe else recipe, extra)
        if name is not None:
            from seglab.config import check_run_name

            try:
                check_run_name(name)
            except ValueError as exc:
                fail(f"--name: {exc}")
            cfg.name = name
        folder = run_dir or Path("runs") / cfg.name
        import contextlib
        import os

        from seglab.artifacts.lock import folder_lock

        # Locked before the engine loads (seconds): a second train into it is refused at once.
        # Rank 0 alone: DDP's other processes (torchrun, SLURM, Lightning) re-run this command.
        zero = True
        if any(k in os.environ for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID")):
            from seglab.engine.distributed import is_rank_zero

            zero = is_rank_zero()
        with folder_lock(folder, "seglab train") if zero else contextlib.nullcontext():
            from seglab.engine import fit

            out = fit(cfg, folder, resume=resume)
        if zero:  # one report, not one per process
            _report(out, as_json)
    except SeglabError as exc:
        fail(str(exc))


def _report(run_dir: Path, as_json: bool) -> None:
    import json

    from seglab.artifacts import rundir

    if rundir.metrics_path(run_dir).is_file():
        doc, show = rundir.read_metrics(run_dir), print_metrics
    elif rundir.kfold_path(run_dir).is_file():
        doc, show = json.loads(rundir.kfold_path(run_dir).read_text()), print_kfold
    else:
        console.print(f"run written to {run_dir}")
        return
    if as_json:
        print_json(doc)
        return
    show(doc)
    console.print(f"run folder: {run_dir}")
