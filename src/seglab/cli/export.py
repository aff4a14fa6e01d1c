"""``seglab export``: a trained model to ONNX or TorchScript, with a parity check."""

from __future__ import annotations

from pathlib import Path

import typer

from seglab.cli import parse
from seglab.cli.output import console, fail, print_json


def export_command(
    source: Path = typer.Argument(
        ..., help="Run folder, model folder (config.json) or .ckpt checkpoint to export."
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
    opset: int = typer.Option(17, help="ONNX opset version."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Export a model: the graph takes a normalised float NCHW batch and returns logits.

    Classes and normalisation are stored in the file: `seglab predict model.onnx ...` works.

    Ends with a parity check against eager PyTorch (max |logit diff|, argmax agreement).
    """
    from seglab.errors import SeglabError
    from seglab.export import export_model

    try:
        report = export_model(source, format, out, dynamic=dynamic,
                              input_size=parse.size(input_size, "--input"), opset=opset)
    except SeglabError as exc:
        fail(str(exc))
    if as_json:
        print_json(report)
        return
    height, width = report["input_size"]
    parity = report["parity"]
    console.print(
        f"wrote {report['path']} ({report['format']}, {report['model']}, "
        f"{height}x{width}{', dynamic axes' if report['dynamic'] else ''}, "
        f"{report['bytes'] / 1e6:.1f} MB, {report['export_seconds']:.1f} s)"
    )
    checks = [parity, *([parity["other_size"]] if "other_size" in parity else [])]
    for check in checks:
        console.print(
            f"parity at {check['size'][0]}x{check['size'][1]} on {check['images']} "
            f"{check['inputs']}: max |logit diff| {check['max_abs_diff']:.3g}, "
            f"argmax agreement {check['argmax_agreement']:.4%}"
        )
