"""Per-image counts: stored by evaluation in the run folder, summing to its confusion matrix,
with intervals and boundary scores in metrics.json and the CLI (``--ci``, ``--no-boundary``)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.engine import evaluate, fit
from seglab.metrics import metrics_from_confusion
from seglab.metrics.confusion import confusion_matrix
from seglab.per_image import (
    FULL_MATRIX_MAX_CLASSES,
    PerImageCounts,
    image_rows,
    load_counts,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data = make_synthetic(tmp_path_factory.mktemp("data") / "s", n_train=8, n_val=4, n_test=5,
                          size=(32, 40), num_classes=3)
    recipe = Recipe.from_dict({
        "name": "t",
        "data": {"spec": f"folder:{data}", "batch_size": 4, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [32, 32]},
        "trainer": {"max_epochs": 1, "progress": False},
        "eval": {"num_panels": 0},
    })
    return fit(recipe, tmp_path_factory.mktemp("runs") / "unet"), data


def test_rows_sum_to_the_confusion_matrix_for_both_layouts() -> None:
    g = torch.Generator().manual_seed(0)
    for c in (5, FULL_MATRIX_MAX_CLASSES + 3):
        truth = torch.randint(0, c, (3, 9, 11), generator=g)
        truth[0, :2] = 255
        pred = torch.randint(0, c, (3, 9, 11), generator=g)
        counts = PerImageCounts.from_rows(["a", "b", "c"], [str(i) for i in range(c)],
                                          image_rows(pred, truth, c).numpy())
        cm = confusion_matrix(pred, truth, c).numpy()
        np.testing.assert_array_equal(counts.tp.sum(0), np.diag(cm))
        np.testing.assert_array_equal(counts.truth.sum(0), cm.sum(1))
        np.testing.assert_array_equal(counts.pred.sum(0), cm.sum(0))
        assert (counts.confusion is None) == (c > FULL_MATRIX_MAX_CLASSES)
        # Each image's own row is that image's confusion matrix.
        one = confusion_matrix(pred[1:2], truth[1:2], c).numpy()
        np.testing.assert_array_equal(counts.tp[1], np.diag(one))
    with pytest.raises(ValueError, match="outside"):
        image_rows(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7), 3)


def test_training_run_stores_per_image_counts_that_sum_to_its_matrix(trained) -> None:
    run, _ = trained
    counts = load_counts(run / "per_image.npz")
    confusion = np.load(run / "confusion.npy")
    assert counts.num_images == 5 and counts.confusion is not None
    np.testing.assert_array_equal(counts.dataset_confusion(), confusion)
    doc = json.loads((run / "metrics.json").read_text())
    # Each row of per_image.csv is that image's own confusion matrix scored alone.
    with (run / "per_image.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["image"] for row in table] == counts.images
    for row, matrix in zip(table, counts.confusion, strict=True):
        alone = metrics_from_confusion(matrix, counts.names)
        assert float(row["miou"]) == pytest.approx(alone["miou"], abs=1e-6)
        assert float(row["pixel_acc"]) == pytest.approx(alone["pixel_acc"], abs=1e-6)
    low, high = doc["ci"]["miou"]
    assert low <= doc["miou"] <= high and doc["ci"]["level"] == 0.95
    assert set(doc["ci"]["per_class"]) == set(doc["per_class"])
    assert 0.0 <= doc["boundary_miou"] <= 1.0 and 0.0 <= doc["mean_bf"] <= 1.0
    assert set(doc["boundary"]["per_class"]) == set(doc["per_class"])


def test_eval_cli_ci_level_json_table_and_no_boundary(trained, tmp_path: Path) -> None:
    from seglab.cli.main import app

    run, _ = trained
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(run), "--json", "--ci", "0.8", "--no-boundary",
                                 "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ci"]["level"] == 0.8 and "boundary_miou" not in doc
    assert "bf" not in doc["ci"]["per_class"][next(iter(doc["per_class"]))]
    saved = json.loads((run / "metrics.json").read_text())
    assert doc["miou"] == pytest.approx(saved["miou"])
    # An 80% interval lies inside the 95% one of the same resamples.
    assert saved["ci"]["miou"][0] <= doc["ci"]["miou"][0] <= doc["ci"]["miou"][1]
    assert doc["ci"]["miou"][1] <= saved["ci"]["miou"][1]
    assert (tmp_path / "e" / "per_image.npz").is_file()
    assert load_counts(tmp_path / "e" / "per_image.npz").boundary is None

    table = runner.invoke(app, ["eval", str(run)])
    assert table.exit_code == 0, table.output
    miou, (low, high) = saved["miou"], saved["ci"]["miou"]
    assert f"mIoU {100 * miou:.1f} [{100 * low:.1f}, {100 * high:.1f}]" in table.stdout
    assert "Boundary IoU" in table.stdout and "bootstrap interval" in table.stdout

    bad = runner.invoke(app, ["eval", str(run), "--ci", "95"])
    assert bad.exit_code == 1
    assert "error: --ci 95.0: confidence level must lie strictly between 0 and 1" in bad.stderr


def test_evaluate_matches_the_saved_counts_again(trained, tmp_path: Path) -> None:
    run, data = trained
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = evaluate(run / "model", f"folder:{data}", "test", out_dir=tmp_path, ci=0.9)
    # the counts reach the metric through update: no "compute before update" warning
    assert not [w for w in caught if "before the ``update``" in str(w.message)]
    again = load_counts(tmp_path / "per_image.npz")
    first = load_counts(run / "per_image.npz")
    np.testing.assert_array_equal(again.confusion, first.confusion)
    np.testing.assert_array_equal(again.boundary, first.boundary)
    assert doc["ci"]["level"] == 0.9


def test_broken_per_image_file_is_a_clear_error(tmp_path: Path) -> None:
    from seglab.errors import DataError

    path = tmp_path / "per_image.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="per_image.npz: cannot read the per-image counts"):
        load_counts(path)
