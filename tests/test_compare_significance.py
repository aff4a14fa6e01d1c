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
