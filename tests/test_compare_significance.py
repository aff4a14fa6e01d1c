"""``seglab compare`` with the paired significance table (tiny synthetic data, real training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seglab.cli.main import app

TINY = [
    "--set", "data.batch_size=4", "--set", "data.eval_batch_size=4",
    "--set", "data.num_workers=0", "--set", "augment.crop_size=null",
    "--set", "augment.scale_range=null", "--set", "optim.name=adamw", "--set", "optim.lr=0.003",
    "--set", "trainer.early_stop_patience=null", "--set", "trainer.checkpoint_every_n_steps=null",
    "--set", "trainer.progress=false", "--set", "eval.num_panels=0",
]
MODELS = ["unet:base_channels=4,depth=2,label=small", "unet:base_channels=8,depth=2,label=wide"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, object]:
    from seglab.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    make_synthetic(root, n_train=8, n_val=4, n_test=6, size=(32, 32), num_classes=3)
    runs = tmp_path_factory.mktemp("runs")
    data = f"folder:{root}"
    result = CliRunner().invoke(app, ["compare", *MODELS, "--data", data, "--epochs", "1",
                                      "--name", "sig", "--runs-root", str(runs), "--gallery",
                                      "1", *TINY])
    return runs, data, result


def test_compare_prints_and_reports_the_paired_differences(compared) -> None:
    runs, _, result = compared
    assert result.exit_code == 0, result.output
    document = json.loads((runs / "sig" / "compare" / "results.json").read_text())
    table = document["significance"]
    assert len(table["pairs"]) == 1 and table["num_images"] == 6
    pair = table["pairs"][0]
    miou = {m["label"]: m["metrics"]["miou"] for m in document["models"]}
    assert pair["difference"] == pytest.approx(miou[pair["a"]] - miou[pair["b"]], abs=1e-9)
    assert pair["difference"] >= 0 and pair["interval"][0] <= pair["difference"]
    assert pair["text"] in result.stdout and "ranking (braces" in result.stdout
    assert sorted(sum(table["groups"], [])) == ["small", "wide"]
    markdown = (runs / "sig" / "compare" / "report.md").read_text()
    assert "## Which differences are real" in markdown and f"{pair['a']} - {pair['b']}" in markdown
    html = (runs / "sig" / "compare" / "report.html").read_text()
    assert 'id="significance"' in html and table["ranking"].replace(">", "&gt;") in html
    # Per-image spread and each model's hardest images, from the stored per-image counts.
    assert 'id="per-image"' in html and "## Hardest images" in markdown
    assert (runs / "sig" / "compare" / "figures" / "per_image_miou.png").stat().st_size > 1000


def test_the_report_shows_each_model_s_worst_images_as_panels(compared) -> None:
    import csv
    import re

    import numpy as np
    from PIL import Image

    from seglab.viz import CORRECT_COLOR, ERROR_COLOR

    runs, _, result = compared
    assert result.exit_code == 0, result.output
    folder = runs / "sig" / "compare"
    html = (folder / "report.html").read_text()
    files = json.loads((folder / "results.json").read_text())["worst_images"]
    assert sorted(files) == ["small", "wide"]
    for label in ("small", "wide"):
        with open(runs / "sig" / label / "per_image.csv", newline="") as handle:
            table = sorted(csv.DictReader(handle), key=lambda r: float(r["miou"]))
        # The panel table of this model: its 3 hardest images, 4 panels each.
        section = html.split(f'data-model="{label}"', 1)[1].split("</table>", 1)[0]
        assert re.findall(r"<th>(.*?)</th>", section) == ["image", "truth", "prediction",
                                                          "error map"]  # fmt: skip
        assert section.count("<tr>") == 1 + 3 and section.count("data:image/") == 12
        assert len(files[label]) == 3 and all(len(row) == 4 for row in files[label])
        for row, expected in zip(files[label], table[:3], strict=True):
            assert all((folder / path).is_file() for path in row)
            assert Path(row[0]).name.endswith(".jpg")  # the photo; masks are PNG
            assert expected["image"] in section  # the per-image table's hardest, in order
            error = np.asarray(Image.open(folder / row[3]).convert("RGB"))
            wrong = (error == ERROR_COLOR).all(-1)
            assert ((error == CORRECT_COLOR).all(-1) | wrong).all()  # no ignore pixels here
            # The model run again on that image: its error map agrees with the evaluation.
            assert 1 - wrong.mean() == pytest.approx(float(expected["pixel_acc"]), abs=0.02)


def test_a_run_without_per_image_counts_is_left_out_by_name(compared) -> None:
    runs, data, _ = compared
    (runs / "sig" / "small" / "per_image.npz").unlink()
    result = CliRunner().invoke(app, ["compare", *MODELS, "--data", data, "--epochs", "1",
                                      "--name", "sig", "--runs-root", str(runs), "--gallery",
                                      "0", *TINY])
    assert result.exit_code == 0, result.output
    assert "no per-image counts for small" in result.stdout
    document = json.loads((runs / "sig" / "compare" / "results.json").read_text())
    assert document["significance"] is None
