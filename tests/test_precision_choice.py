"""``trainer.precision: auto`` on a CPU: the faster of bf16 and fp32, measured, recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seglab.artifacts import device, rundir
from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.engine import precision_choice
from seglab.engine.precision_choice import choose_cpu_precision
from seglab.engine.training import train_one
from seglab.models.registry import build_model


@pytest.fixture(autouse=True)
def bf16_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the probe, which runs only on a CPU with bf16 hardware."""
    monkeypatch.setattr(device, "cpu_bf16_native", lambda: True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic(root, n_train=4, n_val=2, n_test=2, size=(32, 32), num_classes=3)


def _recipe(data: Path, precision: str = "auto", epochs: int = 1,
            crop: tuple[int, int] = (32, 32)) -> Recipe:
    return Recipe.from_dict({
        "name": "p",
        "data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": list(crop)},
        "trainer": {"max_epochs": epochs, "progress": True, "precision": precision},
    })


@pytest.mark.parametrize(("bf16_s", "fp32_s", "expected"),
                         [(0.2, 0.3, "bf16"), (0.4, 0.3, "fp32"), (0.149, 0.144, "bf16"),
                          (0.3, 0.3, "bf16")])
def test_the_faster_mode_wins(monkeypatch: pytest.MonkeyPatch, bf16_s: float, fp32_s: float,
                              expected: str) -> None:
    timings = {True: bf16_s, False: fp32_s}
    monkeypatch.setattr(precision_choice, "time_training_pass",
                        lambda model, images, bf16, steps: timings[bf16])
    choice = choose_cpu_precision(torch.nn.Conv2d(3, 2, 1), (8, 8))
    assert choice.precision == expected
    assert choice.seconds == {"bf16": bf16_s, "fp32": fp32_s}
    assert choice.describe().startswith(f"precision: {expected} (auto")
    tie = bf16_s > fp32_s and expected == "bf16"
    assert ("fp32 is not 10% faster here" in choice.describe()) == tie


@pytest.mark.parametrize(("batch", "probed"), [(1, 2), (4, 4), (8, 8), (32, 8)])
def test_the_probe_runs_at_the_training_batch_within_bounds(monkeypatch: pytest.MonkeyPatch,
                                                             batch: int, probed: int) -> None:
    """bf16's lead depends on the batch (LR-ASPP: fp32 faster at 2, bf16 at 8)."""
    sizes = []

    def fake_pass(model, images, bf16, steps):
        sizes.append(images.shape[0])
        return 0.1

    monkeypatch.setattr(precision_choice, "time_training_pass", fake_pass)
    choose_cpu_precision(torch.nn.Conv2d(3, 2, 1), (8, 8), batch=batch)
    assert sizes == [probed, probed]


def test_probe_leaves_weights_statistics_and_rng_alone() -> None:
    model = build_model("unet", 3, base_channels=4, depth=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    choice = choose_cpu_precision(model, (32, 32), channels_last=False, steps=1)
    assert choice.precision in ("bf16", "fp32") and set(choice.seconds) == {"bf16", "fp32"}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def _printed(capsys: pytest.CaptureFixture) -> str:
    """What training printed: start notes go to stdout above a progress bar, to stderr
    without one (stdout not a terminal, as under pytest)."""
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_auto_is_measured_once_and_recorded_for_resume(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = []

    def fake_choice(model, crop, bands=3, channels_last=True, steps=2, batch=2):
        calls.append((tuple(crop), bands, batch))
        return precision_choice.PrecisionChoice("fp32", {"bf16": 0.5, "fp32": 0.25})

    monkeypatch.setattr(precision_choice, "choose_cpu_precision", fake_choice)
    run = tmp_path / "run"
    metrics = train_one(_recipe(data), run).metrics
    assert calls == [((32, 32), 3, 2)]  # the recipe's batch
    assert rundir.read_recipe(run)["trainer"]["precision"] == "fp32"
    assert "precision: fp32 (auto: the faster here; one training pass bf16 500 ms, fp32 250 ms)" \
        in _printed(capsys)
    assert metrics["miou"] >= 0
    # resumed with the user's recipe (still auto) for a second epoch: no new measurement
    train_one(_recipe(data, epochs=2), run, resume=True)
    assert len(calls) == 1
    assert "as chosen when the run started" in _printed(capsys)
    assert rundir.read_recipe(run)["trainer"]["precision"] == "fp32"


def test_explicit_precision_is_not_measured(data: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("measured although the recipe names a precision")

    monkeypatch.setattr(precision_choice, "choose_cpu_precision", refuse)
    train_one(_recipe(data, precision="fp32"), tmp_path / "run", evaluate_split=None)
    assert rundir.read_recipe(tmp_path / "run")["trainer"]["precision"] == "fp32"


def test_the_probe_times_the_crop_training_uses(data: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # a crop larger than the 32x32 images is capped for training: the probe times the cap
    crops = []

    def fake_choice(model, crop, bands=3, channels_last=True, steps=2, batch=2):
        crops.append(tuple(crop))
        return precision_choice.PrecisionChoice("fp32", {"bf16": 0.5, "fp32": 0.25})

    monkeypatch.setattr(precision_choice, "choose_cpu_precision", fake_choice)
    with pytest.warns(UserWarning, match="32x32"):
        train_one(_recipe(data, crop=(64, 96)), tmp_path / "run", evaluate_split=None)
    assert crops == [(32, 32)]


def test_a_cpu_without_bf16_hardware_trains_fp32_unprobed(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("probed bf16 on a CPU that emulates it")

    monkeypatch.setattr(device, "cpu_bf16_native", lambda: False)
    monkeypatch.setattr(precision_choice, "choose_cpu_precision", refuse)
    train_one(_recipe(data), tmp_path / "run", evaluate_split=None)
    assert rundir.read_recipe(tmp_path / "run")["trainer"]["precision"] == "fp32"
    assert "precision: fp32 (auto: this CPU has no bf16 hardware" in _printed(capsys)
