"""What a new user meets first: literal help text, pure ``--json`` stdout, the weights line,
``data inspect --plot``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.engine.speed import describe_weights
from seglab.models.registry import build_model


def test_help_keeps_defaults_written_in_brackets() -> None:
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert "[default: runs/<name>]" in result.output
    result = CliRunner().invoke(app, ["eval", "--help"])
    assert "[default: the run's recipe]" in result.output


def test_train_json_stdout_is_exactly_one_document(tmp_path: Path) -> None:
    # A real process: Lightning's model summary and progress bars write to file descriptor 1.
    command = [
        sys.executable, "-m", "seglab", "train", "--json", "--run-dir", str(tmp_path / "run"),
        f"data.spec=synthetic:{tmp_path / 'syn'}", "data.options.n_train=4",
        "data.options.n_val=2", "data.options.n_test=2", "data.options.height=32",
        "data.options.width=32", "data.num_workers=0", "data.batch_size=2",
        "model.name=unet", "model.options.base_channels=4", "trainer.max_epochs=1",
        "augment.crop_size=[32,32]",
    ]
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)  # nothing else on stdout
    assert "miou" in document
    # The model summary went to stderr, with the start-of-training weights line.
    assert "weights: none for unet (random initialisation: training from scratch)" in done.stderr


def test_json_mode_restores_stdout_after_the_verb() -> None:
    from seglab.cli.json_mode import document_stream, stdout_to_stderr

    before = sys.stdout
    with stdout_to_stderr():
        assert sys.stdout is sys.stderr
        assert document_stream() is not sys.stderr
    assert sys.stdout is before
    assert document_stream() is before


def test_describe_weights_names_the_weight_options() -> None:
    scratch = build_model("unet", 3, base_channels=4)
    assert describe_weights(scratch.seglab_spec) == (
        "weights: none for unet (random initialisation: training from scratch)"
    )
    spec = {"name": "deeplabv3_resnet101", "options": {"weights": "COCO_WITH_VOC_LABELS_V1",
                                                       "backbone_weights": None}}
    assert describe_weights(spec) == (
        "weights: deeplabv3_resnet101 starts from weights=COCO_WITH_VOC_LABELS_V1"
    )


@pytest.fixture
def tiny_folder(tmp_path: Path) -> str:
    from seglab.data.synthetic import make_synthetic

    root = tmp_path / "data"
    make_synthetic(root, n_train=3, n_val=1, n_test=1, size=(24, 40), num_classes=3, seed=0)
    return f"folder:{root}"


def test_inspect_plot_writes_the_figure(tiny_folder: str, tmp_path: Path) -> None:
    figure = tmp_path / "out" / "inspect.png"
    result = CliRunner().invoke(app, ["data", "inspect", tiny_folder, "--plot", str(figure)])
    assert result.exit_code == 0, result.output
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"figure: {figure}" in result.output
    result = CliRunner().invoke(
        app, ["data", "inspect", tiny_folder, "--json", "--plot", str(tmp_path / "f.svg")]
    )
    assert json.loads(result.stdout)["plot"] == str(tmp_path / "f.svg")


def test_inspect_plot_refuses_an_unknown_suffix(tiny_folder: str, tmp_path: Path) -> None:
    target = tmp_path / "inspect.bmp"
    result = CliRunner().invoke(app, ["data", "inspect", tiny_folder, "--plot", str(target)])
    assert result.exit_code == 1
    assert "--plot" in result.output and "inspect.bmp" in result.output
    assert not target.exists()


def test_evaluate_reports_progress_per_batch(tiny_folder: str, tmp_path: Path) -> None:
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.data.formats import open_source
    from seglab.engine.evaluation import evaluate

    source = open_source(tiny_folder)
    folder = save_pretrained(build_model("unet", 3, base_channels=4), tmp_path / "model",
                             classmap=source.classmap)
    calls: list[tuple[str, int, int]] = []
    evaluate(folder, source, "train", batch_size=2, num_workers=0, precision="fp32",
             progress=lambda *call: calls.append(call))
    assert calls == [("scoring train", 2, 3), ("scoring train", 3, 3)]
