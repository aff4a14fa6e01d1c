"""``seglab demo``: a fixed number of epochs per model, never a time cap."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

import seglab.demo as demo
from seglab.config import Recipe
from seglab.errors import ConfigError


def _recipe(overrides: list[str], data: str = "folder:/nowhere") -> Recipe:
    return Recipe.from_dict({"data": {"spec": data}, "model": {"name": "unet"}}, overrides)


def test_demo_recipe_has_a_fixed_epoch_count_and_no_time_cap() -> None:
    recipe = _recipe(demo.demo_recipe_overrides(7))
    assert recipe.trainer.max_epochs == 7
    assert recipe.trainer.max_minutes is None
    assert recipe.trainer.early_stop_patience is None
    # A time budget in the base recipe is switched off too, whatever it was.
    base = {"data": {"spec": "folder:/x"}, "model": {"name": "unet"},
            "trainer": {"max_minutes": 1.2}}
    assert Recipe.from_dict(base, demo.demo_recipe_overrides(3)).trainer.max_minutes is None


@pytest.mark.parametrize("bad", [0, -2, True, 2.5])
def test_demo_epochs_must_be_a_positive_whole_number(bad: Any) -> None:
    with pytest.raises(ConfigError, match="demo epochs must be a whole number >= 1"):
        demo.demo_recipe_overrides(bad)
    with pytest.raises(ConfigError, match=repr(bad)):
        demo.run_demo("unused", epochs=bad)


def test_run_demo_passes_the_epoch_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_compare(models: list[str], data: str, **kwargs: Any) -> str:
        seen.update(models=models, data=data, **kwargs)
        return "outcome"

    monkeypatch.setattr(demo, "compare", fake_compare)
    assert demo.run_demo(tmp_path / "d", epochs=4, progress=lambda _: None) == "outcome"
    assert seen["models"] == list(demo.DEMO_MODELS)
    assert (tmp_path / "d" / "data").is_dir()
    assert seen["command"] == "seglab demo --epochs 4"
    recipe = _recipe(seen["overrides"], seen["data"])
    assert (recipe.trainer.max_epochs, recipe.trainer.max_minutes) == (4, None)
    demo.run_demo(tmp_path / "d", progress=lambda _: None)
    assert _recipe(seen["overrides"]).trainer.max_epochs == demo.DEMO_EPOCHS
    assert seen["command"] == "seglab demo"


def test_a_slow_machine_trains_the_same_epochs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every clock reading 10 minutes after the last (a very slow or busy machine), the
    demo's recipe still trains every epoch; a 1.2-minute cap would stop after the first."""
    import seglab.engine.callbacks as callbacks
    from seglab.data.synthetic import make_synthetic
    from seglab.engine.training import train_one

    data = make_synthetic(tmp_path / "data", n_train=8, n_val=2, n_test=2, size=(32, 32))
    ticks = itertools.count(step=600.0)
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: next(ticks))
    overrides = [*demo.demo_recipe_overrides(2), "trainer.progress=false", "eval.num_panels=0"]

    def run(extra: list[str], name: str) -> dict[str, Any]:
        recipe = Recipe.from_dict(
            {"data": {"spec": f"folder:{data}"},
             "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}}},
            overrides + extra,
        )
        return train_one(recipe, tmp_path / name, evaluate_split=None).metrics

    assert run([], "fixed")["epochs"] == 2
    assert run(["trainer.max_minutes=1.2"], "capped")["epochs"] == 1


def test_demo_json_prints_only_the_results_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from seglab.cli.main import app

    results = tmp_path / "results.json"
    results.write_text(json.dumps({"models": [{"label": "unet", "miou": 0.5}]}))

    def fake_run_demo(out: str, *, epochs: Any, progress: Any) -> SimpleNamespace:
        progress("training unet")  # progress goes to stderr under --json
        return SimpleNamespace(results=[], report=SimpleNamespace(
            results=results, document=json.loads(results.read_text())))

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    result = CliRunner().invoke(app, ["demo", "--json", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"models": [{"label": "unet", "miou": 0.5}]}
