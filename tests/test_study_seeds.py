"""A study's ``seeds:`` key: each configuration trained with several seeds, finished seed runs
reused, the objective the mean over seeds and the report showing the spread."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from seglab.artifacts.rundir import is_finished, read_history, read_recipe
from seglab.cli.main import app
from seglab.data.synthetic import make_synthetic
from seglab.errors import ConfigError
from seglab.study import load_spec, run_study
from seglab.study.seeded import mean_over_seeds, seed_text


def _spec(data: Path, **changes) -> dict:
    base = {
        "data": {"spec": f"folder:{data}", "batch_size": 3, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [32, 32], "scale_range": None},
        "trainer": {"max_epochs": 1, "checkpoint_every_n_steps": None, "precision": "fp32",
                    "channels_last": False},
        "eval": {"num_panels": 0},
    }  # fmt: skip
    return {"name": "seeded", "base": base, "space": {"optim.name": {"choice": ["sgd", "adam"]}},
            "grid": True, "seeds": 2, **changes}  # fmt: skip


@pytest.mark.parametrize("value", [0, -1, 2.5, "3", True])
def test_seeds_must_be_a_whole_number_of_at_least_one(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_spec(_spec(Path("/nowhere"), seeds=value))
    assert f"seeds: seeds must be a whole number of at least 1, got {value!r}" in str(info.value)
    assert load_spec(_spec(Path("/nowhere"), seeds=3)).seeds == 3
    assert load_spec({k: v for k, v in _spec(Path("/nowhere")).items() if k != "seeds"}).seeds == 1


def test_mean_over_seeds_and_its_text() -> None:
    doc = mean_over_seeds([{"val_miou": 0.5, "split": "test"}, {"val_miou": 0.7, "split": "test"}])
    assert doc["val_miou"] == pytest.approx(0.6) and doc["split"] == "test" and doc["seeds"] == 2
    figures = doc["seed_summary"]["val_miou"]
    assert figures["std"] == pytest.approx(0.1414213562)
    # t(0.975, 1) = 12.706: half-width 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert figures["interval"] == pytest.approx([0.6 - 1.2706, 0.6 + 1.2706])
    assert seed_text(doc["seed_summary"], "val_miou").startswith("0.6000 ± 0.1414 [")
    assert seed_text(None, "val_miou") == ""


def test_a_seeded_grid_study_trains_each_configuration_per_seed_and_reuses_them(
    tmp_path: Path,
) -> None:
    data = make_synthetic(tmp_path / "data", n_train=6, n_val=2, n_test=2, size=(32, 32),
                          num_classes=3)  # fmt: skip
    notes = []
    outcome = run_study(_spec(data), out=tmp_path / "studies", progress=notes.append)
    trials = outcome.results["trials"]
    assert outcome.results["finished"] == 2 and {t["state"] for t in trials} == {"COMPLETE"}
    folders = set()
    for trial in trials:
        folder = Path(trial["run_dir"])
        folders.add(folder)
        assert folder.parent == outcome.study_dir / "configs"
        runs = [folder / "seed0", folder / "seed1"]
        assert trial["metrics"]["seed_runs"] == [str(r.resolve()) for r in runs]
        assert all(is_finished(r) for r in runs)
        assert [read_recipe(r)["trainer"]["seed"] for r in runs] == [0, 1]
        assert read_recipe(runs[0])["optim"]["name"] == trial["params"]["optim.name"]
        best = [max(x["val_miou"] for x in read_history(r)) for r in runs]
        assert trial["value"] == pytest.approx(sum(best) / 2)  # the objective: the seeds' mean
        summary = trial["metrics"]["seed_summary"]
        assert summary["val_miou"]["values"] == pytest.approx(best)
        assert summary["miou"]["n"] == 2 and trial["epochs"] == 1
    assert len(folders) == 2  # one folder per configuration
    html = outcome.files["report"].read_text()
    assert html.count("over seeds</div>") == 2 and "trains with 2 seeds" in html
    assert "seed0" not in outcome.results["best"]["run_dir"]
    assert (outcome.study_dir / "best_recipe.yaml").is_file()
    shown = CliRunner().invoke(app, ["study", "show", str(outcome.study_dir)])
    assert shown.exit_code == 0 and "over seeds" in shown.output
    first = outcome.results["trials"][0]["metrics"]["seed_summary"]["val_miou"]
    assert f"{first['mean']:.4f} ± {first['std']:.4f}" in shown.output
    trained = [e for e in notes if e.kind == "note" and "seed" in e.data]
    assert len(trained) == 4 and not any(e.data["reused"] for e in trained)

    # The same configurations asked again (a fresh storage over the same folder): every seed
    # run is reused, none trained twice.
    finished = outcome.study_dir.glob("configs/*/seed*/metrics.json")
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    again_notes = []
    again = run_study(_spec(data), out=tmp_path / "studies", storage=str(tmp_path / "j.log"),
                      progress=again_notes.append)  # fmt: skip
    reused = [e for e in again_notes if e.kind == "note" and "seed" in e.data]
    assert len(reused) == 4 and all(e.data["reused"] for e in reused)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert sorted(t["value"] for t in again.results["trials"]) == pytest.approx(
        sorted(t["value"] for t in trials)
    )
