"""The CLI's consoles print text literally (``markup=False``): no rich markup reaches the user.

``seglab predict`` (inputs skipped) and ``seglab bench`` (a backend failing) once printed
``[bold red]...[/]`` on those consoles, so users saw the brackets. Each test runs that branch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from seglab.artifacts.pretrained import save_pretrained
from seglab.bench import suite
from seglab.cli.main import app
from seglab.models import build_model

MARKUP = ("[bold", "[red", "[/]")


def _no_markup(output: str) -> None:
    assert not [tag for tag in MARKUP if tag in output], output


def test_predict_skipped_inputs_print_without_markup(tmp_path):
    torch.manual_seed(0)
    model = save_pretrained(build_model("unet", 3, base_channels=4, depth=2).eval(),
                            tmp_path / "model")
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "broken [1].png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = CliRunner().invoke(app, ["predict", str(model), str(tmp_path / "in"),
                                      "--out", str(tmp_path / "out"), "--backend", "torch"])
    assert result.exit_code == 1, result.output
    assert "1 input(s) skipped:" in result.output
    assert "broken [1].png" in result.output  # brackets in a file name are printed as they are
    _no_markup(result.output)


def test_bench_failed_backend_prints_without_markup(monkeypatch: pytest.MonkeyPatch):
    def fails(*args, **kwargs):
        raise RuntimeError("kernel [conv] has no bf16 path")

    monkeypatch.setattr(suite, "benchmark", fails)
    result = CliRunner().invoke(app, ["bench", "unet:base_channels=4,depth=2", "--input", "32x32",
                                      "--repeats", "1", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "failed: RuntimeError: kernel [conv] has no bf16 path" in result.output
    _no_markup(result.output)
