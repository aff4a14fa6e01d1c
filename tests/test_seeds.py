"""Uncertainty from training: ``seglab compare --seeds N`` and its summary over seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seglab.cli.main import app
from seglab.seeds import seed_table, summarise


def test_summary_is_mean_std_and_t_interval() -> None:
    s = summarise([0.5, 0.6, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
    half = 4.303 * 0.1 / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert s["interval"] == pytest.approx([0.6 - half, 0.6 + half])
    one = summarise([0.4])
    assert one["n"] == 1 and math.isnan(one["std"])
    table = seed_table({"m": {0: {"miou": 0.5}, 1: {"miou": 0.7}}})
    assert table["m"]["text"].startswith("m: mIoU 60.0 ± 14.1 (2 seeds, 95% interval")


def test_compare_trains_each_seed_and_summarises(tmp_path: Path) -> None:
    from seglab.data.synthetic import make_synthetic

    root = make_synthetic(tmp_path / "data", n_train=8, n_val=4, n_test=4, size=(32, 32),
                          num_classes=3)
    args = ["compare", "unet:base_channels=4,depth=2,label=tiny", "--data", f"folder:{root}",
            "--seeds", "2", "--epochs", "1", "--name", "s", "--runs-root", str(tmp_path),
            "--gallery", "0",
            *[f"--set={o}" for o in ("data.batch_size=4", "data.num_workers=0",
                                     "augment.crop_size=null", "augment.scale_range=null",
                                     "trainer.progress=false", "eval.num_panels=0",
                                     "trainer.early_stop_patience=null")]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    mious = []
    for seed in (0, 1):
        run = tmp_path / "s" / f"tiny-seed{seed}"
        assert f"seed: {seed}" in (run / "recipe.yaml").read_text()
        mious.append(json.loads((run / "metrics.json").read_text())["miou"])
    document = json.loads((tmp_path / "s" / "compare" / "results.json").read_text())
    summary = document["seeds"]["tiny"]
    assert summary["seeds"] == [0, 1]
    assert summary["miou"]["mean"] == pytest.approx(sum(mious) / 2)
    assert summary["text"] in result.stdout
    assert "## Over training seeds" in (tmp_path / "s" / "compare" / "report.md").read_text()
    # The seeds are paired like any two models on the same images.
    assert [p["a"] for p in document["significance"]["pairs"]][0].startswith("tiny-seed")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and again.stdout.count("reusing finished run") == 2
    bad = CliRunner().invoke(app, [*args[:4], "--seeds", "0", *args[6:]])
    assert bad.exit_code == 1 and "--seeds must be at least 1" in bad.stderr
