"""``seglab eval``: score a run, model folder or checkpoint on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from seglab.cli.output import console, fail, print_json


def _fmt(value: Any, percent: bool = True) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{100 * value:.2f}" if percent else str(value)


def print_metrics(doc: dict[str, Any]) -> None:
    """Per-class table and headline scores on the console."""
    from rich.table import Table

    table = Table(title=f"{doc.get('split', '')} split, {doc.get('num_images', '?')} images")
    for column in ("class", "IoU", "Acc", "Dice", "Prec", "Rec", "pixels"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in doc["per_class"].items():
        table.add_row(
            name,
            _fmt(row["iou"]),
            _fmt(row["acc"]),
            _fmt(row["dice"]),
            _fmt(row["precision"]),
            _fmt(row["recall"]),
            str(row["support"]),
        )
    console.print(table)
    console.print(
        f"mIoU {_fmt(doc['miou'])}  pixel acc {_fmt(doc['pixel_acc'])}  "
        f"mAcc {_fmt(doc['mean_acc'])}  fwIoU {_fmt(doc['fw_iou'])}  "
        f"mDice {_fmt(doc['mean_dice'])}  F1 macro {_fmt(doc['f1_macro'])}"
    )
    if doc.get("classes_excluded_from_mean"):
        excluded = ", ".join(doc["classes_excluded_from_mean"])
        console.print(f"not in truth or prediction, left out of the means: {excluded}")


def print_kfold(doc: dict[str, Any]) -> None:
    """Mean and std per metric over the folds."""
    from rich.table import Table

    table = Table(title=f"{doc['folds']}-fold cross-validation")
    for column in ("metric", "mean", "std", *(f"fold {i}" for i in range(doc["folds"]))):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, stats in doc["metrics"].items():
        table.add_row(key, _fmt(stats["mean"]), _fmt(stats["std"]), *map(_fmt, stats["values"]))
    console.print(table)


def evaluate(
    source: Path = typer.Argument(
        ..., help="Run folder, model folder (config.json) or .ckpt checkpoint."
    ),
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
        None, "--out", "-o", help="Folder for metrics.json, per_class.csv, confusion.npy, panels."
    ),
    panels: int | None = typer.Option(None, min=0, help="image|truth|prediction panels to draw."),
    fp32: bool = typer.Option(False, "--fp32", help="Run in float32 (default: bf16/fp16)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1 or auto."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics document as JSON."),
) -> None:
    """Score a trained model on a dataset split at the labels' own resolution."""
    from seglab.cli.predict import _scales, _size
    from seglab.engine.evaluation import evaluate as run_evaluation
    from seglab.errors import SeglabError

    scale_values = _scales(scales)
    if tta and scale_values is None:
        scale_values = (0.75, 1.0, 1.25)
    try:
        doc = run_evaluation(
            source,
            data,
            split,
            mode=mode,
            crop=_size(crop, "--crop"),
            stride=_size(stride, "--stride"),
            size=_size(size, "--size"),
            scales=scale_values,
            flip=True if tta else None,
            out_dir=out,
            num_panels=panels,
            precision="fp32" if fp32 else "auto",
            device=device,
        )
    except SeglabError as exc:
        fail(str(exc))
    if as_json:
        print_json(doc)
        return
    print_metrics(doc)
    if out is not None:
        console.print(f"written to {out}")
