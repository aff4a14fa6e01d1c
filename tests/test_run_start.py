"""What a run says at its start and per epoch, and a time-budget schedule that only decays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seglab.config import Recipe, ScheduleConfig
from seglab.data.synthetic import make_synthetic
from seglab.engine import fit
from seglab.engine.run_start import (
    CLASS_WEIGHTS_FILE,
    EpochBar,
    epoch_line,
    save_class_weights,
    schedule_warnings,
)
from seglab.engine.schedules import IterationSchedule


def _schedule(name: str, total: int, warmup: int = 0) -> IterationSchedule:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    cfg = ScheduleConfig(name=name, warmup_iters=warmup)
    return IterationSchedule(optimizer, cfg, total, 10, 0.1)


def _run(schedule: IterationSchedule, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        schedule.optimizer.step()
        schedule.step()
        lrs.append(schedule.get_last_lr()[0])
    return lrs


@pytest.mark.parametrize("name", ["poly", "cosine"])
@pytest.mark.parametrize("new_total", [60, 400])
def test_a_refitted_schedule_never_rises_and_ends_annealed(name: str, new_total: int) -> None:
    schedule = _schedule(name, 100)
    before = _run(schedule, 40)
    schedule.refit(new_total)  # the time budget's estimate shrank or grew mid-run
    after = _run(schedule, new_total - 40)
    lrs = before + after
    assert all(b <= a + 1e-12 for a, b in zip(lrs, lrs[1:], strict=False)), "the LR rose"
    assert after[-1] == pytest.approx(0.0, abs=1e-9)  # annealed at the new end
    assert after[0] == pytest.approx(before[-1], rel=0.1)  # no jump at the refit


def test_schedule_state_with_a_refit_resumes_exactly() -> None:
    first = _schedule("poly", 100)
    _run(first, 30)
    first.refit(50)
    _run(first, 5)
    second = _schedule("poly", 100)
    second.load_state_dict(first.state_dict())
    assert _run(second, 10) == pytest.approx(_run(first, 10))


def test_warmup_that_does_not_fit_the_run_is_a_warning() -> None:
    assert "never reaches optim.lr" in schedule_warnings(50, 6)[0]
    assert "80% of the run" in schedule_warnings(8, 10)[0]
    assert schedule_warnings(5, 100) == [] and schedule_warnings(0, 6) == []


def test_class_weights_are_saved_and_a_large_ratio_warned(tmp_path: Path) -> None:
    lines = save_class_weights(tmp_path, ["road", "pole"], [0.5, 90_000.0], "median_frequency")
    saved = json.loads((tmp_path / CLASS_WEIGHTS_FILE).read_text())
    assert saved == {"strategy": "median_frequency", "weights": {"road": 0.5, "pole": 90000.0}}
    assert any("180,000:1" in line and "'pole'" in line for line in lines)
    calm = save_class_weights(tmp_path, ["a", "b"], [1.0, 3.0], "inverse_sqrt")
    assert not any(line.startswith("warning") for line in calm)
    assert save_class_weights(tmp_path / "none", ["a"], None, "none") == []


def test_epoch_line_reads_a_history_row() -> None:
    row = {"epoch": 3, "train_loss": 0.41234, "val_miou": 0.5231, "lr": 0.0081, "time_s": 72.0}
    assert epoch_line(row, 25) == ("epoch 3/25: train loss 0.4123, val mIoU 52.31%, lr 0.0081, "
                                   "1.2 min")


def test_the_bar_counts_epochs_from_one_of_the_planned_total() -> None:
    from types import SimpleNamespace

    bar = EpochBar()
    bar._trainer = SimpleNamespace(max_epochs=1)  # Lightning's own bar said "Epoch 0/0"
    assert bar._get_train_description(0).strip() == "Epoch 1/1"
    bar._trainer = SimpleNamespace(max_epochs=25)  # a time budget's plan
    assert bar._get_train_description(13).strip() == "Epoch 14/25"


def test_a_run_announces_its_plan_weights_and_warmup(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    data = make_synthetic(tmp_path / "data", n_train=4, n_val=2, n_test=2, size=(32, 32),
                          num_classes=3)
    recipe = Recipe.from_dict({
        "name": "t",
        "data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [32, 32]},
        "loss": {"class_weights": "median_frequency"},
        "schedule": {"warmup_iters": 50},
        "trainer": {"max_epochs": 1, "progress": False, "precision": "fp32"},
    })
    run = tmp_path / "run"
    fit(recipe, run)
    err = capsys.readouterr().err
    assert f"run folder: {run}; images: train 4, val 2, test 2; training for 1 epoch" in err
    assert "model: unet, " in err and "parameters" in err
    assert f"saved in {run / CLASS_WEIGHTS_FILE}" in err
    assert "warmup_iters=50 is longer than the run (2 steps)" in err
    weights = json.loads((run / CLASS_WEIGHTS_FILE).read_text())["weights"]
    assert set(weights) == {"background", "disc", "box"}


def test_the_time_budget_s_plan_is_the_progress_total() -> None:
    from types import SimpleNamespace

    from seglab.engine.callbacks import TrainingClock

    clock = TrainingClock(budget_s=101.0, max_epochs=199)
    module = SimpleNamespace(schedule=_schedule("poly", 1990))
    trainer = SimpleNamespace(current_epoch=0, should_stop=False,
                              fit_loop=SimpleNamespace(max_epochs=199))
    clock.on_train_start(trainer, module)
    clock.epoch_times = [4.0]  # 25 epochs fit in 101 s
    clock.elapsed_s = 4.0
    clock._epoch_started = None
    clock.on_train_epoch_end(trainer, module)
    assert clock.planned_epochs == 25 and trainer.fit_loop.max_epochs == 25
    assert module.schedule.total_steps == 250
