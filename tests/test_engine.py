"""Engine: fit writes a complete run folder, evaluate scores it, resume after SIGKILL, k-fold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seglab.artifacts import device
from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.engine import evaluate, fit
from seglab.engine.callbacks import HISTORY_COLUMNS, TrainingClock, read_history
from seglab.engine.trainer_setup import lightning_precision
from seglab.errors import ConfigError

METRIC_KEYS = (
    "miou pixel_acc mean_acc fw_iou mean_dice precision_macro recall_macro f1_macro f1_micro "
    "f1_weighted jaccard_macro jaccard_micro per_class classes_excluded_from_mean split "
    "num_images train_time_s epochs"
).split()
TINY_UNET = {"name": "unet", "options": {"base_channels": 4, "depth": 2}}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return make_synthetic(root, n_train=9, n_val=4, n_test=4, size=(32, 40), num_classes=3)


def _recipe(data: Path, name: str = "t", **sections) -> Recipe:
    base = {
        "name": name,
        "data": {"spec": f"folder:{data}", "batch_size": 4, "num_workers": 0},
        "model": TINY_UNET,
        "augment": {"crop_size": [32, 32], "scale_range": [0.75, 1.25]},
        "trainer": {"max_epochs": 2, "progress": False, "checkpoint_every_n_steps": 1},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return Recipe.from_dict(base)


@pytest.fixture(scope="module")
def trained_run(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "unet"
    recipe = _recipe(
        synthetic,
        loss={"class_weights": "median_frequency"},
        augment={"eval_resize": [24, 30]},  # the model sees 24x30, scores are at 32x40
        trainer={"max_epochs": 3},
    )
    return fit(recipe, run)


def test_fit_writes_the_run_folder(trained_run: Path, synthetic: Path) -> None:
    for name in ("recipe.yaml", "history.csv", "metrics.json", "per_class.csv", "confusion.npy"):
        assert (trained_run / name).is_file(), name
    for name in ("best.ckpt", "last.ckpt"):
        assert (trained_run / "checkpoints" / name).is_file()
    assert (trained_run / "model" / "config.json").is_file()
    assert (trained_run / "model" / "model.safetensors").is_file()
    assert len(list((trained_run / "panels").glob("*.png"))) == 4

    history = read_history(trained_run / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2, 3]
    header = (trained_run / "history.csv").read_text().splitlines()[0]
    assert header == ",".join(HISTORY_COLUMNS)
    assert all(0 <= row["val_miou"] <= 1 for row in history)
    assert history[0]["time_s"] <= history[-1]["time_s"]

    doc = json.loads((trained_run / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(doc)
    assert doc["split"] == "test" and doc["num_images"] == 4 and doc["epochs"] == 3
    # Scored at the labels' own 32x40 resolution although the model ran at 24x30.
    confusion = np.load(trained_run / "confusion.npy")
    assert confusion.shape == (3, 3)
    assert confusion.sum() == doc["num_pixels"] <= 4 * 32 * 40
    assert confusion.sum() > 0.9 * 4 * 32 * 40
    resolved = Recipe.from_yaml(trained_run / "recipe.yaml")
    assert resolved.data.spec == f"folder:{synthetic}"


def test_checkpoints_load_with_weights_only(trained_run: Path) -> None:
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(trained_run / "checkpoints" / name, weights_only=True)
        assert checkpoint["hyper_parameters"]["recipe"]["model"]["name"] == "unet"
        assert any(k.startswith("model.") for k in checkpoint["state_dict"])


def test_evaluate_agrees_across_sources_and_with_a_direct_count(
    trained_run: Path, synthetic: Path, tmp_path: Path
) -> None:
    from seglab.artifacts.pretrained import from_pretrained
    from seglab.data.formats import open_source
    from seglab.engine.inference import predict_logits
    from seglab.metrics.confusion import confusion_matrix

    saved = json.loads((trained_run / "metrics.json").read_text())
    again = evaluate(trained_run, split="test", out_dir=tmp_path)
    assert again["miou"] == pytest.approx(saved["miou"])
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "per_class.csv").is_file()
    from_model = evaluate(trained_run / "model", f"folder:{synthetic}", "test")
    assert from_model["miou"] == pytest.approx(saved["miou"])

    # An independent count: run the model image by image, upsampled to each label.
    model, config = from_pretrained(trained_run / "model")
    dataset = open_source(f"folder:{synthetic}").dataset("test")
    total = np.zeros((3, 3), dtype=np.int64)
    for image, mask in (dataset[i] for i in range(len(dataset))):
        probs = predict_logits(
            model, image[None], mean=config["normalization"]["mean"],
            std=config["normalization"]["std"], size=(24, 30),
        )
        assert probs.shape[-2:] == mask.shape
        total += confusion_matrix(probs.argmax(1), mask[None], 3).numpy()
    np.testing.assert_array_equal(total, np.load(trained_run / "confusion.npy"))


def test_eval_cli_json(trained_run: Path) -> None:
    from seglab.cli.main import app

    result = CliRunner().invoke(app, ["eval", str(trained_run), "--json", "--panels", "0"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    saved = json.loads((trained_run / "metrics.json").read_text())
    assert doc["miou"] == pytest.approx(saved["miou"])


def test_train_cli_reports_bad_recipe_in_plain_words(tmp_path: Path) -> None:
    from seglab.cli.main import app

    result = CliRunner().invoke(
        app, ["train", "data.spec=folder:/x", "model.name=unet", "optim.lr=-1"]
    )
    assert result.exit_code == 1
    assert "optim.lr" in result.output and "Traceback" not in result.output


def test_refuses_to_overwrite_and_resume_needs_a_checkpoint(
    trained_run: Path, synthetic: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="already holds a run"):
        fit(_recipe(synthetic), trained_run)
    with pytest.raises(ConfigError, match="cannot resume"):
        fit(_recipe(synthetic), tmp_path / "fresh", resume=True)


def test_no_training_batch_of_size_one(synthetic: Path) -> None:
    # 9 training images, batch 4: the last partial batch (1 image) must never reach BatchNorm.
    from seglab.data.formats import open_source
    from seglab.engine.run_plan import train_crop as _train_crop
    from seglab.engine.training import _datamodule

    recipe = _recipe(synthetic)
    source = open_source(recipe.data.spec)
    datamodule = _datamodule(recipe, source, _train_crop(recipe, source))
    datamodule.setup("fit")
    sizes = [images.shape[0] for images, _ in datamodule.train_dataloader()]
    assert sizes and min(sizes) > 1


def test_frozen_backbone_does_not_move(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seglab.engine.module as module_mod
    from seglab.artifacts.pretrained import from_pretrained

    initial: dict[str, torch.Tensor] = {}
    build = module_mod.build_segmentation_model

    def remember_initial(recipe: Recipe, num_classes: int) -> torch.nn.Module:
        model = build(recipe, num_classes)
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(module_mod, "build_segmentation_model", remember_initial)
    recipe = _recipe(
        synthetic,
        model={"name": "lraspp_mobilenetv3_small", "options": {}, "freeze": "head"},
        trainer={"max_epochs": 1},
    )
    run = fit(recipe, tmp_path / "frozen")
    trained, _ = from_pretrained(run / "model")
    moved = {k for k, v in trained.state_dict().items() if not torch.equal(v, initial[k])}
    # Weights and BatchNorm statistics of the frozen backbone are untouched; the head learned.
    assert not {k for k in moved if k.startswith("backbone.")}
    assert {k for k in moved if k.startswith("head.")}


def test_resume_after_sigkill_mid_epoch(synthetic: Path, tmp_path: Path) -> None:
    data = make_synthetic(tmp_path / "data", n_train=24, n_val=2, n_test=2, size=(32, 32))
    run = tmp_path / "killed"
    args = [
        "data.spec=folder:" + str(data), "data.batch_size=2", "data.num_workers=0",
        "model.name=unet", "model.options.base_channels=4", "model.options.depth=2",
        "augment.crop_size=32", "trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=2",
        "trainer.progress=false",
    ]
    command = [sys.executable, "-m", "seglab", "train", *args, "--run-dir", str(run)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert last.is_file(), "no checkpoint was written before the deadline"
    state = torch.load(last, weights_only=True)
    assert state["epoch"] < 3 and not (run / "metrics.json").exists()
    # The checkpoint was written inside an epoch (every 2 steps of 12), not at its end.
    assert state["global_step"] % 12 != 0

    resumed = subprocess.run(
        [sys.executable, "-m", "seglab", "train", "--resume", "--run-dir", str(run), "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["epochs"] == 3
    assert [row["epoch"] for row in read_history(run / "history.csv")] == [1, 2, 3]
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == 3 * 12  # every epoch ran all its 12 batches


def test_kfold_reports_mean_and_std(synthetic: Path, tmp_path: Path) -> None:
    recipe = _recipe(synthetic, trainer={"max_epochs": 1, "folds": 2})
    run = fit(recipe, tmp_path / "cv")
    summary = json.loads((run / "kfold.json").read_text())
    assert summary["folds"] == 2
    miou = summary["metrics"]["miou"]
    assert len(miou["values"]) == 2
    assert miou["mean"] == pytest.approx(np.mean(miou["values"]))
    assert miou["std"] == pytest.approx(np.std(miou["values"], ddof=1))
    for i in range(2):
        fold_doc = json.loads((run / f"fold_{i}" / "metrics.json").read_text())
        assert fold_doc["split"] == "val"
        assert fold_doc["miou"] == pytest.approx(miou["values"][i])
    from seglab.cli.output import print_kfold

    print_kfold(summary)  # the console table `seglab train` prints for a k-fold run
    # The 13 train+val pairs were split into folds of 7 and 6 held-out images.
    assert sorted(
        json.loads((run / f"fold_{i}" / "metrics.json").read_text())["num_images"]
        for i in range(2)
    ) == [6, 7]


@pytest.mark.parametrize("native", [True, False])
def test_precision_mapping(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(device, "cpu_bf16_native", lambda: native)
    assert lightning_precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    assert lightning_precision("fp32", "cpu") == "32-true"
    assert lightning_precision("bf16", "cpu") == "bf16-mixed"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        lightning_precision("fp16", "cpu")


def test_time_budget_counts_the_time_left_at_the_recent_pace() -> None:
    # 10 epochs of 10 s, then three of 15 s (a shared machine got slower): 200 s budget,
    # 145 s used, 55 s left hold 3 more epochs of 15 s: 16 in all (200 / 15 would say 13
    # and leave 55 s unused)
    clock = TrainingClock(budget_s=200.0, max_epochs=50)
    module = SimpleNamespace(schedule=SimpleNamespace(total_steps=500, steps_per_epoch=10))
    trainer = SimpleNamespace(current_epoch=12, should_stop=False)
    clock.on_train_start(trainer, module)
    clock.epoch_times = [10.0] * 10 + [15.0] * 3
    clock.elapsed_s = 145.0
    clock._epoch_started = None
    clock.on_train_epoch_end(trainer, module)
    assert clock.planned_epochs == 16 and module.schedule.total_steps == 160
    assert not trainer.should_stop


def test_time_budget_fits_epochs_and_schedule() -> None:
    clock = TrainingClock(budget_s=100.0, max_epochs=50)
    module = SimpleNamespace(schedule=SimpleNamespace(total_steps=500, steps_per_epoch=10))
    trainer = SimpleNamespace(current_epoch=0, should_stop=False)
    clock.on_train_start(trainer, module)
    clock.epoch_times = [24.0]  # one epoch took 24 s: 4 epochs fit in 100 s
    clock.elapsed_s = 24.0
    clock._epoch_started = None
    clock.on_train_epoch_end(trainer, module)
    assert clock.planned_epochs == 4
    assert module.schedule.total_steps == 40
    assert not trainer.should_stop
    trainer.current_epoch = 3
    clock.elapsed_s = 96.0
    clock.on_train_epoch_end(trainer, module)
    assert trainer.should_stop
    state = clock.state_dict()
    restored = TrainingClock(budget_s=100.0)
    restored.load_state_dict(state)
    assert restored.total_s() == pytest.approx(96.0, abs=1.0)
    assert restored.planned_epochs == clock.planned_epochs
    assert restored.epoch_times == clock.epoch_times
