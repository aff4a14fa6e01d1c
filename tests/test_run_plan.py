"""A run is resolved once into a frozen RunPlan, saved and logged; fit returns a FitResult
equal to what the run folder holds; the folder's lock and the rank-0 guard live in fit alone."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import seglab.engine.fitting as fitting
import seglab.engine.training as training
from seglab.artifacts import device, rundir
from seglab.artifacts.lock import FolderLockedError, is_locked
from seglab.compare import _trained_result
from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.engine import fit, precision_choice, run_plan
from seglab.engine.run_plan import RunPlan
from seglab.engine.run_result import FitResult
from seglab.report.runs import load_run


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("data"), n_train=6, n_val=2, n_test=2,
                          size=(32, 32), num_classes=3)


def _recipe(data: Path, **trainer: object) -> Recipe:
    return Recipe.from_dict({
        "name": "plan",
        "data": {"spec": f"folder:{data}", "batch_size": 2, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [48, 48]},  # larger than the images: capped to 32x32
        "loss": {"class_weights": "inverse"},
        "trainer": {"max_epochs": 2, "progress": False, "precision": "auto", **trainer},
    })


def _same(a: object, b: object) -> bool:
    """Equal as JSON (NaN == NaN, tuples == lists)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_run_is_resolved_once_saved_logged_and_returned(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The probe's answer is fixed, so the test reads the same on any CPU (AVX2 included).
    probes = []

    def fake_choice(model, crop, bands=3, channels_last=True, steps=2, batch=2):
        probes.append(tuple(crop))
        return precision_choice.PrecisionChoice("fp32", {"bf16": 0.5, "fp32": 0.25})

    monkeypatch.setattr(device, "cpu_bf16_native", lambda: True)
    monkeypatch.setattr(precision_choice, "choose_cpu_precision", fake_choice)
    resolved = []
    resolve = run_plan.resolve_run

    def counting_resolve(*args, **kwargs):
        resolved.append(resolve(*args, **kwargs))
        return resolved[-1]

    monkeypatch.setattr(training, "resolve_run", counting_resolve)
    recipe = _recipe(data)
    validations = []
    validate = Recipe.model_validate
    monkeypatch.setattr(Recipe, "model_validate",
                        classmethod(lambda cls, obj, **kw: validations.append(1)
                                    or validate.__func__(cls, obj, **kw)))
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="32x32"), caplog.at_level(logging.INFO):
        result = fit(recipe, run)

    # resolved once, from the one validated recipe: no dict -> Recipe on the way
    assert len(resolved) == 1 and validations == [] and probes == [(32, 32)]
    plan = result.plan
    assert isinstance(plan, RunPlan) and plan is resolved[0].plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.precision = "bf16"  # type: ignore[misc]
    assert recipe.trainer.precision == "auto"  # the caller's recipe is not edited
    assert (plan.precision, plan.recipe.trainer.precision) == ("fp32", "fp32")
    assert plan.crop == (32, 32) and plan.device == "cpu" and plan.processes == 1
    assert plan.threads == torch.get_num_threads()
    assert (plan.train_split, plan.val_split, plan.evaluate_split) == ("train", "val", "test")
    assert plan.class_weights is not None and len(plan.class_weights) == 3
    assert "precision: fp32 (auto: the faster here" in (plan.precision_note or "")
    # logged, and saved beside recipe.yaml without repeating it
    assert plan.describe() in caplog.text
    saved = json.loads(run_plan.plan_path(run).read_text())
    assert saved == plan.to_dict() and "recipe" not in saved
    assert rundir.read_recipe(run) == plan.recipe.to_dict()
    weights = json.loads((run / "class_weights.json").read_text())["weights"]
    assert list(weights.values()) == pytest.approx(list(plan.class_weights))
    # the checkpoint trained the same resolved recipe that recipe.yaml holds
    hparams = rundir.read_checkpoint(rundir.checkpoint_path(run, rundir.LAST))["hyper_parameters"]
    assert hparams["recipe"] == plan.recipe.to_dict()

    # the result's fields are what the folder holds
    assert isinstance(result, FitResult) and result.run_dir == run and result.scored
    assert _same(result.metrics, rundir.read_metrics(run))
    assert len(result.history) == 2
    assert _same(list(result.history), rundir.read_history(run))
    assert result.model_dir == rundir.model_dir(run)
    # where fit returned the folder before, the result still stands for it
    assert os.fspath(result) == str(result) == str(run) and result / "model" == run / "model"
    assert Path(result) == run
    # compare reports a model it trained from this value: the same entry as from the folder
    entry, folder = _trained_result(result, "m"), load_run(run, label="m", status="trained")
    assert _same(entry.metrics, folder.metrics) and _same(entry.history, folder.history)
    assert entry.recipe == folder.recipe and entry.source == folder.source
    assert np.array_equal(entry.confusion, folder.confusion)
    assert entry.per_image is not None and folder.per_image is not None
    for key in ("tp", "truth", "pred"):
        assert np.array_equal(getattr(entry.per_image, key), getattr(folder.per_image, key))
    assert entry.per_image.images == folder.per_image.images


def test_a_resumed_run_keeps_its_plan_choice(data: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cpu_bf16_native", lambda: False)  # fp32 without a probe
    run = tmp_path / "run"
    first = fit(_recipe(data, max_epochs=1), run)
    assert first.plan.precision == "fp32" and first.plan.resume_from is None
    resumed = fit(_recipe(data, max_epochs=2), run, resume=True)
    assert resumed.plan.resume_from == rundir.checkpoint_path(run, rundir.LAST)
    assert "as chosen when the run started" in resumed.plan.precision_note
    assert [row["epoch"] for row in resumed.history] == [1, 2]  # the earlier epoch kept
    assert _same(list(resumed.history), rundir.read_history(run))
    assert json.loads(run_plan.plan_path(run).read_text())["resumed_from"] == str(
        rundir.checkpoint_path(run, rundir.LAST))


def test_kfold_result_holds_each_fold(data: Path, tmp_path: Path) -> None:
    recipe = _recipe(data, max_epochs=1, folds=2, precision="fp32")
    result = fit(recipe, tmp_path / "cv")
    assert len(result.folds) == 2 and not result.scored and result.plan is None
    assert _same(result.metrics, json.loads(rundir.kfold_path(tmp_path / "cv").read_text()))
    for i, fold in enumerate(result.folds):
        assert fold.run_dir == rundir.fold_dir(tmp_path / "cv", i)
        assert _same(fold.metrics, rundir.read_metrics(fold.run_dir))
        assert fold.plan.evaluate_split == "val"


def test_fit_alone_locks_the_folder_and_only_on_rank_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def fake_train_one(recipe, run_dir, **kwargs):
        seen.append(is_locked(run_dir))  # the training below fit finds the folder held
        return FitResult(Path(run_dir), {})

    monkeypatch.setattr(fitting, "train_one", fake_train_one)
    recipe = Recipe.from_dict({"data": {"spec": "folder:x"}, "model": {"name": "unet"}})
    fit(recipe, tmp_path / "zero")
    assert seen == [True] and not is_locked(tmp_path / "zero")

    # another process holds the folder: rank 0 is refused before training, naming its pid
    held = tmp_path / "held"
    held.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom seglab.artifacts.lock import folder_lock\n"
         f"with folder_lock({str(held)!r}, 'test'):\n print('held', flush=True)\n time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            fit(recipe, held)
        assert len(seen) == 1
        # a DDP process of rank 1 (started on the same command) takes no lock: it goes on
        monkeypatch.setenv("RANK", "1")
        fit(recipe, held)
        assert seen == [True, True]
    finally:
        holder.kill()
        holder.wait()
