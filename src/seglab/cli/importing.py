"""``seglab import``: any model plus its settings -> an ordinary seglab model folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from seglab.cli import model_options, parse
from seglab.cli.output import console, fail
from seglab.errors import SeglabError


@model_options.takes_settings
def import_command(
    source: Path = typer.Argument(..., help=model_options.SOURCE_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (replaced "
                             "atomically)."),
    size: str | None = typer.Option(None, "--size", help="Input size HxW the model runs at "
                                    "(images are resized to it) [default: the file's fixed "
                                    "size, else each image's own]."),
    settings: Any = None,  # the model options (model_options.takes_settings)
) -> None:
    """Save a model from elsewhere, with its settings, as a seglab model folder.

    The folder (config.json, the weights or the ONNX/TorchScript file, a model card) works with
    every verb (eval, predict, bench, compare, export, push) without the options again.
    """
    # lazy: the loader takes ~8 s to import (loaded 2-core CPU), which every
    # "seglab --help" would pay: cli/main imports each verb's module.
    from seglab.artifacts.importing import import_model

    settings = replace(settings, size=parse.size(size, "--size"))
    try:
        folder = import_model(source, out, settings)
    except SeglabError as exc:
        fail(str(exc))
    console.print(f"wrote model folder {folder} (use it with seglab eval/predict/bench/compare)",
                  highlight=False)
