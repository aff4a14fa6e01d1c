"""``seglab predict``: masks, colour masks, overlays and probabilities for images and videos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from seglab.cli import model_options, parse
from seglab.cli.output import console, err_console, fail, list_providers, print_json
from seglab.errors import SeglabError


def _progress_bar() -> tuple[Any, Any]:
    """A rich bar per task, fed by ``predict_paths``' ``progress(task, done, total)`` calls."""
    # lazy, like rich.table in the other verbs: at the top, rich.progress and rich.table add
    # about 40 ms (median of 12, this loaded machine) to every "seglab" start.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )
    tasks: dict[str, Any] = {}

    def report(task: str, done: int, total: int | None) -> None:
        if task not in tasks:
            tasks[task] = bar.add_task(task, total=total)
        bar.update(tasks[task], completed=done)

    return bar, report


def predict(
    source: Path = typer.Argument(..., help=model_options.SOURCE_HELP),
    inputs: list[str] = typer.Argument(
        ..., help="Image files, folders (searched recursively), globs ('photos/*.jpg'), videos."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the outputs."),
    save: str = typer.Option(
        "mask,color,overlay",
        help="Outputs per image, comma-separated: mask (class-id PNG), color (palette PNG), "
        "overlay (mask over the image), proba (per-class probabilities, npz). Videos always "
        "get an overlay video.",
    ),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="Mask opacity in overlays."),
    batch: int = typer.Option(4, min=1, help="Images (or video frames) per forward pass."),
    mode: str | None = typer.Option(
        None,
        help="whole: one pass per image; slide: overlapping --crop windows "
        "[default: the model's own eval setting, else whole].",
    ),
    crop: str | None = typer.Option(
        None, help="Sliding-window size, HxW or one number (needed with --mode slide)."
    ),
    stride: str | None = typer.Option(
        None, help="Sliding-window step, HxW or one number (default: 2/3 of --crop)."
    ),
    size: str | None = typer.Option(
        None,
        help="Model input size HxW: images are resized to it, masks come back at full size "
        "[default: the model's eval_resize, else the image's size].",
    ),
    tta: bool = typer.Option(
        False, "--tta", help="Test-time augmentation: horizontal flip + scales 0.75,1,1.25."
    ),
    scales: str | None = typer.Option(
        None, help="Comma-separated test scales, e.g. 0.5 (run at half size) or 0.75,1,1.25."
    ),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    precision: str = typer.Option(
        "auto",
        help="auto (bf16 on a CPU with bf16 hardware, else fp32; bf16/fp16 on CUDA), fp32, "
        "bf16 or fp16.",
    ),
    backend: str = typer.Option(
        "auto", help="auto: the fastest runtime that gives the same masks (an .onnx, or a "
        "current ONNX export inside the model folder when it agrees and is faster; else "
        "torch, compiled on a CPU when the inputs are enough to pay for it); torch; "
        "compile; onnxruntime."
    ),
    provider: str | None = typer.Option(
        None, "--provider", callback=list_providers, is_eager=True,
        help="ONNX Runtime execution provider: cpu, cuda, tensorrt, openvino, ... "
        "(`--provider list` prints those installed) [default: cuda on a CUDA device, else cpu].",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON summary with class shares per image."
    ),
    mean: str | None = model_options.mean_option(),
    std: str | None = model_options.std_option(),
    scale: float | None = model_options.scale_option(),
    channels: str | None = model_options.channels_option(),
    classes: str | None = model_options.classes_option(),
    num_classes: int | None = model_options.num_classes_option(),
    model: str | None = model_options.model_option(),
) -> None:
    """Predict masks for images and videos; bad files are skipped and listed at the end."""
    # lazy: seglab.predict brings torch (3.1 s measured), not for "seglab --help".
    from seglab.predict import TTA_SCALES, Predictor, collect_inputs, parse_save, predict_paths

    crop_hw = parse.size(crop, "--crop")
    stride_hw = parse.size(stride, "--stride")
    size_hw = parse.size(size, "--size")
    chosen_scales = parse.scales(scales) or (TTA_SCALES if tta else None)  # None: saved
    settings = model_options.settings(mean, std, scale, channels, classes, num_classes, model)
    try:
        kinds = parse_save(save)
        collect_inputs(inputs)  # a typo in an input fails before the model loads
        predictor = Predictor(
            source,
            device=device,
            mode=mode,
            crop=crop_hw,
            stride=stride_hw,
            size=size_hw,
            scales=chosen_scales,
            flip=True if tta else None,  # None: the model's saved flip
            precision=precision,
            batch_size=batch,
            backend=backend,
            provider=provider,
            settings=settings,
        )
        model_options.print_notes(predictor.notes)
        bar, report = _progress_bar()
        with bar:
            summary = predict_paths(
                predictor, inputs, out, save=kinds, alpha=alpha, progress=report
            )
    except SeglabError as exc:
        fail(str(exc))

    document = summary.to_dict()
    document["model"] = str(predictor.source)
    document["device"] = str(predictor.device)
    document["mode"] = predictor.mode
    document["backend"] = predictor.backend
    document["backend_reason"] = predictor.backend_reason
    document["provider"] = predictor.provider
    if as_json:
        print_json(document)
    else:
        console.print(
            f"wrote {document['num_images']} image and {document['num_videos']} video "
            f"predictions to {out} in {document['seconds']:.1f}s ({predictor.backend}"
            f"{' on ' + predictor.provider if predictor.provider else ''}: "
            f"{predictor.backend_reason})",
            highlight=False,
        )
    if summary.failed:
        err_console.print(f"{len(summary.failed)} input(s) skipped:", style="bold red")
        for entry in summary.failed:
            # Errors usually name their file already; do not say it twice.
            line = (
                entry["error"]
                if entry["input"] in entry["error"]
                else (f"{entry['input']}: {entry['error']}")
            )
            err_console.print(f"  {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
