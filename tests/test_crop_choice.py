"""trainer.budget_epochs: the crop is kept when the wanted epochs fit the budget at the measured
speed, else shrunk (and timed again) down to augment.min_crop_size; the choice is printed,
saved in recipe.yaml and plan.json, kept on resume, and timing it changes nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seglab.artifacts import device, rundir
from seglab.config import Recipe
from seglab.data.formats import open_source
from seglab.data.synthetic import make_synthetic
from seglab.engine import crop_choice, fit, run_plan
from seglab.engine.crop_choice import CROP_STEP, MAX_PROBES, choose_crop, smaller_crop
from seglab.engine.data_setup import build_datamodule
from seglab.engine.module import build_segmentation_model
from seglab.errors import ConfigError


def _area_speed(at_full: float, full: tuple[int, int], log: list):
    """A machine whose images/s is inversely proportional to the crop's area."""

    def speed(crop: tuple[int, int]) -> float:
        log.append(crop)
        return at_full * full[0] * full[1] / (crop[0] * crop[1])

    return speed


def _clock():
    ticks = iter(range(0, 1000, 3))  # every probe "takes" 3 s
    return lambda: float(next(ticks))


def test_the_crop_is_kept_when_the_epochs_fit() -> None:
    timed: list = []
    # 33.5 images/s, 468 images, 18.5 minutes: ~79 epochs, more than the 45 wanted
    choice = choose_crop((176, 240), (96, 128), 45, 18.5 * 60, 468,
                         _area_speed(33.5, (176, 240), timed), clock=_clock())
    assert choice.crop == (176, 240) and timed == [(176, 240)]
    assert choice.probe_s == 3.0
    line = choice.describe()
    assert line.startswith("crop: 176x240 kept for the 18.5-minute budget")
    assert "33.5 images/s here, ~79 epochs" in line and "budget_epochs 45" in line


def test_a_slow_machine_gets_a_smaller_crop_that_fits() -> None:
    timed: list = []
    # 14 images/s: ~33 epochs at 176x240; the area must shrink to ~33/45 of it
    choice = choose_crop((176, 240), (96, 128), 45, 18.5 * 60, 468,
                         _area_speed(14.0, (176, 240), timed), clock=_clock())
    assert timed[0] == (176, 240) and len(timed) == 2
    assert choice.crop == timed[1] and choice.crop[0] % CROP_STEP == 0
    assert choice.crop[0] * choice.crop[1] < 176 * 240 * 33 / 45
    assert choice.epochs(dict(choice.timed)[choice.crop]) >= 45
    line = choice.describe()
    assert line.startswith(f"crop: {choice.crop[0]}x{choice.crop[1]} instead of 176x240 so "
                           "that trainer.budget_epochs=45 epochs fit the 18.5-minute budget (")
    assert "still short" not in line


def test_the_smallest_crop_bounds_the_choice_and_says_so() -> None:
    timed: list = []
    choice = choose_crop((176, 240), (128, 176), 45, 18.5 * 60, 468,
                         _area_speed(4.0, (176, 240), timed), clock=_clock())
    assert choice.crop == (128, 176) and timed[-1] == (128, 176)
    assert len(timed) <= MAX_PROBES
    assert "still short of it at augment.min_crop_size" in choice.describe()


def test_a_speed_that_does_not_follow_the_area_is_corrected_once() -> None:
    timed: list = []

    def stubborn(crop):  # a smaller crop gains only half of what its area promises
        timed.append(crop)
        return 10.0 * (1 + (176 * 240 / (crop[0] * crop[1]) - 1) / 2)

    choice = choose_crop((176, 240), (64, 64), 45, 18.5 * 60, 468, stubborn, clock=_clock())
    assert len(timed) == MAX_PROBES and timed[2][0] * timed[2][1] < timed[1][0] * timed[1][1]
    assert choice.crop == timed[2]


def test_smaller_crop_rounds_down_and_always_moves() -> None:
    assert smaller_crop((176, 240), 0.5, (16, 16)) == (112, 160)
    assert smaller_crop((176, 240), 0.99, (16, 16)) == (160, 224)  # at least one step
    assert smaller_crop((176, 240), 0.01, (128, 176)) == (128, 176)
    assert crop_choice.default_min_crop((176, 240)) == (80, 112)


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.budget_epochs=40"], "trainer.budget_epochs needs trainer.max_minutes"),
    (["trainer.budget_epochs=40", "trainer.max_minutes=5", "augment.crop_size=null"],
     "budget_epochs chooses the training crop: it needs augment.crop_size"),
    (["augment.min_crop_size=[600,64]"], r"min_crop_size \[600, 64\] is larger than"),
])
def test_recipes_that_cannot_choose_are_refused(overrides: list[str], message: str) -> None:
    base = {"data": {"spec": "folder:/nowhere"}, "model": {"name": "unet"}}
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict(base, overrides)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("data"), n_train=8, n_val=2, n_test=2,
                          size=(64, 64), num_classes=3)


def _recipe(data: Path, *overrides: str) -> Recipe:
    return Recipe.from_dict({
        "name": "crop",
        "data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [64, 64], "scale_range": [0.5, 1.0]},
        "trainer": {"max_epochs": 2, "max_minutes": 60, "progress": False,
                    "precision": "fp32", "early_stop_patience": None,
                    "checkpoint_every_n_steps": None},
    }, list(overrides))


def test_measuring_trains_a_copy_and_leaves_the_rng_alone(data: Path) -> None:
    recipe = _recipe(data)
    source = open_source(recipe.data.spec)
    model = build_segmentation_model(recipe, source.classmap.num_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    datamodule = build_datamodule(recipe, source, (64, 64))
    torch.manual_seed(7)
    speed = crop_choice.measure_training_speed(recipe, model, datamodule, source.classmap,
                                               None, (32, 32))
    after_probe = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after_probe, torch.rand(3))  # the global stream is where it was
    assert 0 < speed < float("inf")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    crops = [t.size for t in datamodule.train_transform.transforms if hasattr(t, "size")]
    assert [tuple(c) for c in crops] == [(32, 32)]  # the loaders now train the timed crop


def test_a_kept_crop_trains_exactly_as_without_the_timing(data: Path, tmp_path: Path) -> None:
    plain = fit(_recipe(data), tmp_path / "plain")
    timed = fit(_recipe(data, "trainer.budget_epochs=2"), tmp_path / "timed")
    assert timed.plan.crop == (64, 64)
    assert (timed.plan.crop_note or "").startswith("crop: 64x64 kept for the 60-minute budget")
    assert timed.plan.budget_s < 3600 and plain.plan.budget_s == 3600
    losses = [[row["train_loss"] for row in run.history] for run in (plain, timed)]
    assert losses[0] == losses[1]
    assert timed.metrics["miou"] == plain.metrics["miou"]


def test_the_chosen_crop_is_trained_saved_and_kept_on_resume(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "cpu_bf16_native", lambda: False)
    timed: list = []
    slow = _area_speed(0.01, (64, 64), timed)  # far too slow for 60 epochs in 60 minutes
    monkeypatch.setattr(crop_choice, "measure_training_speed", lambda *args: slow(args[-1]))
    run = tmp_path / "run"
    first = fit(_recipe(data, "trainer.budget_epochs=60", "augment.min_crop_size=[32,48]",
                        "trainer.max_epochs=1"), run)
    assert first.plan.crop == (32, 48) and timed[0] == (64, 64)
    assert "instead of 64x64" in first.plan.crop_note
    assert rundir.read_recipe(run)["augment"]["crop_size"] == [32, 48]
    saved = json.loads(run_plan.plan_path(run).read_text())
    assert saved["crop"] == [32, 48] and saved["crop_note"] == first.plan.crop_note

    timed.clear()
    resumed = fit(_recipe(data, "trainer.budget_epochs=60", "augment.min_crop_size=[32,48]",
                          "trainer.max_epochs=2"), run, resume=True)
    assert timed == [] and resumed.plan.crop == (32, 48)
    assert resumed.plan.crop_note == "crop: 32x48 (as chosen when the run started)"
    assert resumed.plan.resume_from == rundir.checkpoint_path(run, rundir.LAST)
    assert resumed.plan.recipe.augment.crop_size == (32, 48)  # not refused as an edit
