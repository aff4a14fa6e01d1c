"""``seglab eval``: score a run, model folder, checkpoint or any model file on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from seglab.cli import model_options, parse
from seglab.cli.output import console, fail, print_json, print_metrics, progress_bar
from seglab.errors import SeglabError


@model_options.takes_settings
def evaluate(
    source: Path = typer.Argument(..., help=model_options.SOURCE_HELP),
    data: str | None = typer.Option(
        None, "--data", help="Dataset '<format>:<path>' [default: the run's recipe]."
    ),
    split: str = typer.Option("test", help="Split to score."),
    mode: str | None = typer.Option(
        None, help="whole or slide [default: the recipe's eval.mode, else whole]."
    ),
    crop: str | None = typer.Option(None, help="Sliding-window size, HxW or one number."),
    stride: str | None = typer.Option(None, help="Sliding-window step, HxW or one number."),
    size: str | None = typer.Option(
        None, help="Model input size HxW [default: the recipe's augment.eval_resize]."
    ),
    tta: bool = typer.Option(
        False, "--tta", help="Multi-scale (0.75, 1, 1.25) + horizontal flip test-time views."
    ),
    scales: str | None = typer.Option(None, help="Test-time scales, e.g. 0.75,1,1.25."),
    out: Path | None = typer.Option(
        None, "--out", "-o",
        help="Folder for metrics.json, per_class.csv, confusion.npy, per_image.npz/.csv, panels.",
    ),
    panels: int | None = typer.Option(None, min=0, help="image|truth|prediction panels to draw."),
    fp32: bool = typer.Option(
        False, "--fp32", help="Run in float32 (default: bf16/fp16 where the hardware has it)."
    ),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1 or auto."),
    devices: int = typer.Option(
        1, "--devices", min=1,
        help="Processes scoring disjoint shards of the split (metrics equal one process's).",
    ),
    accelerator: str | None = typer.Option(
        None, "--accelerator", help="cpu or gpu for --devices N [default: from --device]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics document as JSON."),
    ci: float = typer.Option(
        0.95, "--ci", help="Confidence level of the bootstrap intervals over the images."
    ),
    no_boundary: bool = typer.Option(
        False, "--no-boundary", help="Skip Boundary IoU and boundary F (BF) scores."
    ),
    settings: Any = None,  # the model options (model_options.takes_settings)
) -> None:
    """Score a trained model on a dataset split at the labels' own resolution."""
    # lazy: the evaluation library takes 8-16 s to import (loaded 2-core CPU), which every
    # "seglab --help" would pay: cli/main imports each verb's module.
    from seglab.engine.evaluation import evaluate as run_evaluation
    from seglab.predict import TTA_SCALES

    scale_values = parse.scales(scales)
    if tta and scale_values is None:
        scale_values = TTA_SCALES
    try:
        with progress_bar() as progress:
            doc = run_evaluation(
                source,
                data,
                split,
                mode=mode,
                crop=parse.size(crop, "--crop"),
                stride=parse.size(stride, "--stride"),
                size=parse.size(size, "--size"),
                scales=scale_values,
                flip=True if tta else None,
                out_dir=out,
                num_panels=panels,
                precision="fp32" if fp32 else "auto",
                device=device,
                devices=devices,
                accelerator=accelerator,
                progress=progress,
                settings=settings,
                boundary=not no_boundary,
                ci=ci,
            )
    except SeglabError as exc:
        fail(str(exc))
    model_options.print_notes(doc.get("notes"))
    if as_json:
        print_json(doc)
        return
    print_metrics(doc)
    if out is not None:
        console.print(f"written to {out}")
