"""The metric extension point: a metric registered once reaches every place that shows scores.

A dummy but real metric (the share of misclassified pixels, lower is better) is registered,
then found in an evaluation's metrics.json, in ``seglab eval``'s printed summary and its
``--json`` document, in the comparison report's table (best = lowest) and results.json, and
as a study objective (minimised by default, read back from a run's metrics.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seglab.artifacts.pretrained import save_pretrained
from seglab.cli.main import app
from seglab.data.formats import open_source
from seglab.data.synthetic import make_synthetic
from seglab.metrics import (
    ClassCounts,
    metric_keys,
    metrics_from_confusion,
    register_metric,
    unregister_metric,
)
from seglab.models import build_model
from seglab.report import ModelResult, load_run, write_report
from seglab.study.runner import folder_metrics
from seglab.study.spec import load_spec


def _pixel_error(counts: ClassCounts) -> float:
    """Share of the scored pixels whose predicted class is wrong."""
    return float(1.0 - counts.tp.sum() / counts.total) if counts.total > 0 else float("nan")


def test_a_registered_metric_reaches_metrics_json_the_cli_the_report_and_a_study(
    tmp_path: Path,
) -> None:
    """How to add a metric: a new module in ``src/seglab/metrics/`` with ``fn(counts:
    ClassCounts) -> float`` decorated ``@register_metric(key, label, fmt=, direction=, shown_in=)``
    and its import line in ``seglab/metrics/__init__.py``. metrics.json, ``seglab eval`` (and
    ``--json``), the report's table and study objectives then show it; nothing else names it."""
    register_metric("pixel_error", "Pixel error", short="error", direction="lower")(_pixel_error)
    try:
        assert "pixel_error" in metric_keys("objective")
        data = make_synthetic(tmp_path / "data", n_train=2, n_val=2, n_test=3, size=(24, 24),
                              num_classes=3)
        classmap = open_source(f"folder:{data}").classmap
        model = build_model("unet", 3, base_channels=4, depth=2)
        folder = save_pretrained(model, tmp_path / "model", classmap=classmap)

        # An evaluation through the CLI: metrics.json and the --json document carry the score.
        runner = CliRunner()
        out = tmp_path / "eval"
        done = runner.invoke(app, ["eval", str(folder), "--data", f"folder:{data}", "--json",
                                   "--out", str(out), "--no-boundary", "--panels", "0"])
        assert done.exit_code == 0, done.output
        printed = json.loads(done.stdout)
        saved = json.loads((out / "metrics.json").read_text())
        confusion = np.load(out / "confusion.npy")
        expected = 1.0 - np.trace(confusion) / confusion.sum()
        assert saved["pixel_error"] == pytest.approx(expected)
        assert printed["pixel_error"] == pytest.approx(expected)
        assert saved["pixel_error"] == pytest.approx(1.0 - saved["pixel_acc"])

        # The printed summary line names it with its short label, as a percent.
        table = runner.invoke(app, ["eval", str(folder), "--data", f"folder:{data}",
                                    "--no-boundary", "--panels", "0"])
        assert table.exit_code == 0, table.output
        assert f"error {100 * expected:.2f}" in table.stdout

        # The report: its column, the lower value marked best, and results.json.
        perfect = np.diag(confusion.sum(1))  # every pixel right: error 0, the best
        other = ModelResult("perfect", metrics_from_confusion(perfect, classmap.names))
        files = write_report([load_run(out, label="unet"), other], classmap, tmp_path / "report")
        cells = [[cell.strip() for cell in line.strip("|").split("|")]
                 for line in files.markdown.read_text().splitlines()
                 if line.startswith(("| Model ", "| unet ", "| perfect "))]
        column = cells[0].index("Pixel error %")
        rows = {row[0]: row[column] for row in cells[1:]}
        assert rows == {"unet": f"{100 * expected:.1f}", "perfect": "**0.0**"}
        results = json.loads(files.results.read_text())
        assert results["models"][0]["metrics"]["pixel_error"] == pytest.approx(expected)

        # A study objective: accepted by name, minimised by default, read from metrics.json.
        spec = load_spec({"name": "s", "base": {"data": {"spec": f"folder:{data}"},
                                                "model": {"name": "unet"}},
                          "space": {"optim.lr": {"log_uniform": [1e-4, 1e-2]}},
                          "objective": {"metric": "pixel_error"}})
        assert spec.objectives[0].direction == "minimize"
        assert folder_metrics(out, None, ["pixel_error"])["pixel_error"] == pytest.approx(expected)
    finally:
        unregister_metric("pixel_error")
    assert "pixel_error" not in metrics_from_confusion(np.eye(2, dtype=np.int64))


def test_registry_refuses_a_twice_registered_key_and_unknown_settings() -> None:
    with pytest.raises(ValueError, match="'miou' is registered twice"):
        register_metric("miou", "again")(_pixel_error)
    with pytest.raises(ValueError, match="direction must be one of higher, lower, got 'up'"):
        register_metric("x_metric", "X", direction="up")
    with pytest.raises(ValueError, match="a place must be one of"):
        register_metric("x_metric", "X", shown_in=("sidebar",))
    with pytest.raises(ValueError, match="'x_metric' is not registered"):
        unregister_metric("x_metric")
