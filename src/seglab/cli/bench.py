"""``seglab bench``: parameters, size, GFLOPs, latency, throughput and memory of models."""

from __future__ import annotations

from typing import Any

import typer

from seglab.cli import model_options, parse
from seglab.cli.output import console, err_console, fail, list_providers, print_json, print_wide
from seglab.errors import SeglabError


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def render_table(doc: dict[str, Any]) -> Any:
    """A rich Table of a :func:`seglab.bench.bench_models` document."""
    from rich.table import Table  # lazy: see cli/predict.py's rich.progress

    height, width = doc["input_size"]
    provider = f", ONNX provider {doc['provider']}" if doc.get("provider") else ""
    title = (f"seglab bench: {doc['device']} ({doc['device_name']}){provider}, "
             f"input {height}x{width}, "
             f"{doc['threads']} torch threads, warm-up {doc['warmup']}, "
             f"repeats {doc['repeats']}")
    table = Table(title=title)
    columns = ["model", "backend", "params (M)", "MB", "GFLOPs", "p50 ms", "p90 ms"]
    columns += [f"img/s @{b}" for b in doc["batch_sizes"]]
    columns += ["peak MB", f"speed-up vs {doc['ratio_baseline']}"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "backend") else "right",
                         no_wrap=True)
    for row in doc["results"]:
        cells = [row["model"], row["backend"], _fmt(row["params"] / 1e6, 2),
                 _fmt(row["weight_mb"]), _fmt(row["gflops"], 2)]
        if "error" in row or "skipped" in row:
            cells += ["failed" if "error" in row else "skipped"]
            cells += ["-"] * (len(columns) - len(cells))
        else:
            cells += [_fmt(row["latency_ms"]), _fmt(row["latency_p90_ms"])]
            cells += [_fmt(row["throughput"][str(b)], 2) for b in doc["batch_sizes"]]
            cells += [_fmt(row["peak_mem_mb"]), f"{_fmt(row['speedup'], 2)}x"]
        table.add_row(*cells)
    return table


def print_report(doc: dict[str, Any]) -> None:
    """Table, the failures, and the paragraph saying what was measured and how."""
    print_wide(render_table(doc))
    for row in doc["results"]:
        if "error" in row:
            # Unwrapped, like every error line: a path cut at the console width cannot be copied.
            console.print(f"{row['model']} / {row['backend']} failed: {row['error']}", style="red",
                          soft_wrap=True)
    methods = {row.get("peak_mem_method") for row in doc["results"]} - {None}
    console.print(f"Method: {doc['method']}", highlight=False)
    if methods:
        console.print(f"Peak memory measured by: {'; '.join(sorted(methods))}.",
                      highlight=False)
    console.print(f"speed-up vs {doc['ratio_baseline']} = the {doc['ratio_baseline']} p50 "
                  "latency of the same model / this row's (above 1 is faster).", highlight=False)
    for note in doc.get("notes", []):
        console.print(f"note: {note}", highlight=False)


def row_line(row: dict[str, Any]) -> str:
    """One finished row as a line (printed as it finishes: a long bench shows its numbers)."""
    head = f"{row['model']} / {row['backend']}:"
    if "error" in row:
        return f"{head} failed ({row['error']})"
    rates = ", ".join(f"{v:.2f} img/s @{b}" for b, v in row["throughput"].items())
    return f"{head} p50 {row['latency_ms']:.1f} ms, {rates}, speed-up {row['speedup']:.2f}x"


def bench_command(
    models: list[str] = typer.Argument(
        ..., help="Registry names (built untrained) and/or saved models: "
        + model_options.MODEL_SOURCES + ". An ONNX/TorchScript file is timed in its own "
        "runtime."),
    input_size: str = typer.Option("512x1024", "--input", help="Input HxW."),
    batch: str = typer.Option("1", "--batch", help="Comma-separated batch sizes, e.g. 1,8."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    backend: str = typer.Option(
        "eager", "--backend",
        help="Comma-separated: eager, channels_last, bf16, fp16 (CUDA), compile, "
        "compile_freezing, bf16_compile_freezing, onnxruntime, onnxruntime_int8."),
    provider: str = typer.Option(
        None, "--provider", callback=list_providers, is_eager=True,
        help="ONNX Runtime execution provider for the onnxruntime backends: cpu, cuda, "
        "tensorrt, openvino, ... (`--provider list` prints those installed) [default: cpu]."),
    repeats: int = typer.Option(10, "--repeats", help="Timed forward passes per batch size."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed passes before timing."),
    num_classes: int = typer.Option(21, "--num-classes",
                                    help="Classes for models built from the registry."),
    allow_emulated: bool = typer.Option(
        False, "--allow-emulated",
        help="Time bf16 backends on a CPU without bf16 hardware too (emulated: several times "
        "slower than fp32; skipped with a note by default)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    channels: str | None = model_options.channels_option(),
    model: str | None = model_options.model_option(),
) -> None:
    """Benchmark models: params, weight MB, GFLOPs, p50/p90 latency, images/s, peak memory.

    Times the network's forward pass on a random input under torch.inference_mode, after
    warm-up passes, CUDA-synchronised; the output says exactly what was measured.
    """
    # lazy: seglab.bench brings torch and the model zoo (2.9 s), not for "seglab --help".
    from seglab.bench import bench_models

    try:
        size = parse.size(input_size, "--input")
        backends = [b.strip() for b in backend.split(",") if b.strip()]
        doc = bench_models(models, size, parse.int_list(batch, "--batch"), device, backends, warmup,
                           repeats, num_classes,
                           progress=lambda message: err_console.print(message, style="dim",
                                                                      soft_wrap=True),
                           provider=provider, allow_emulated=allow_emulated,
                           on_row=None if as_json else lambda r: err_console.print(row_line(r),
                                                                             soft_wrap=True),
                           settings=model_options.settings(channels=channels, model=model))
    except SeglabError as exc:
        fail(str(exc))
    if as_json:
        print_json(doc)
    else:
        print_report(doc)
