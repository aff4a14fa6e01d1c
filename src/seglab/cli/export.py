"""``seglab export``: a trained model to ONNX (fp32 or int8) or TorchScript, parity-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from seglab.cli import model_options, parse
from seglab.cli.output import console, fail, print_json
from seglab.errors import SeglabError


@model_options.takes_settings
def export_command(
    source: Path = typer.Argument(
        ..., help="Run folder, model folder (config.json), .ckpt checkpoint or a state dict "
        "(.pth/.pt/.safetensors, with --model) to export."
    ),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),  # noqa: A002
    out: Path = typer.Option(..., "--out", "-o", help="File to write (.onnx / .pt)."),
    dynamic: bool = typer.Option(
        False, "--dynamic", help="Free batch, height and width axes (ONNX only)."
    ),
    input_size: str = typer.Option(
        None, "--input", help="Input size HxW to trace at, e.g. 360x480 (default: the "
        "model's saved inference size, else 512x512)."
    ),
    opset: int = typer.Option(
        None, help="ONNX opset version [default: 18 with the dynamo exporter, 17 legacy]."
    ),
    exporter: str = typer.Option(
        "auto", "--exporter", help="ONNX exporter: auto (dynamo, else the legacy one with a "
        "note), dynamo or legacy."
    ),
    int8: str = typer.Option(
        None, "--int8", help="Write an int8-quantised ONNX file: static (calibrated on "
        "images, fast on CPUs) or dynamic."
    ),
    calibration: Path = typer.Option(
        None, "--calibration", help="Folder of calibration images for --int8 static "
        "[default: CamVid-11 train images under SEGLAB_DATA]."
    ),
    calibration_count: int = typer.Option(
        16, "--calibration-count", min=1, help="Calibration images for --int8 static."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    settings: Any = None,  # the model options (model_options.takes_settings)
) -> None:
    """Export a model: the graph takes a normalised float NCHW batch and returns logits.

    Classes and normalisation are stored in the file: `seglab predict model.onnx ...` works.

    Ends with a parity check against eager PyTorch (max |logit diff|, argmax agreement).
    """
    # lazy: seglab.export takes ~9 s to import (loaded 2-core CPU), which every
    # "seglab --help" would pay: cli/main imports each verb's module.
    from seglab.export import export_model

    try:
        report = export_model(source, format, out, dynamic=dynamic,
                              input_size=parse.size(input_size, "--input"), opset=opset,
                              exporter=exporter, int8=int8, calibration=calibration,
                              calibration_count=calibration_count,
                              settings=settings)
    except SeglabError as exc:
        fail(str(exc))
    if as_json:
        print_json(report)
        return
    height, width = report["input_size"]
    parity = report["parity"]
    how = report["exporter"] + (f" exporter, opset {report['opset']}" if report["opset"]
                                else "")
    int8_report = report.get("int8")
    console.print(
        f"wrote {report['path']} ({report['format']}"
        f"{', int8 ' + int8_report['method'] if int8_report else ''}, {report['model']}, "
        f"{height}x{width}{', dynamic axes' if report['dynamic'] else ''}, {how}, "
        f"{report['bytes'] / 1e6:.1f} MB, {report['export_seconds']:.1f} s)"
    )
    _print_checks("parity", parity)
    if int8_report:
        console.print(f"int8 calibration: {int8_report['calibration']}; fp32 file "
                      f"{int8_report['fp32_bytes'] / 1e6:.1f} MB")
        _print_checks("int8 vs eager fp32", int8_report["parity_vs_fp32_eager"])
    for note in [*report["notes"], *report.get("defaults", [])]:
        console.print(f"note: {note}")


def _print_checks(label: str, parity: dict) -> None:
    for check in [parity, *parity.get("other_sizes", [])]:
        console.print(
            f"{label} at {check['size'][0]}x{check['size'][1]} on {check['images']} "
            f"{check['inputs']}: max |logit diff| {check['max_abs_diff']:.3g}, "
            f"argmax agreement {check['argmax_agreement']:.4%}"
        )
