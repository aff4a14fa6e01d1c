"""seglab.artifacts: the run-folder layout, the one loader, device resolution."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from seglab.artifacts import rundir
from seglab.artifacts.device import resolve_device
from seglab.artifacts.loader import load_inference_model
from seglab.data.classes import ClassMap
from seglab.errors import ConfigError, DataError, ModelError

CLASSMAP = ClassMap.from_names(["sky", "road", "car"])
RECIPE = {"model": {"name": "unet"}, "data": {"spec": "folder:x"}, "eval": {"mode": "whole"}}


def _run(root: Path, *, finished: bool = True) -> Path:
    run = root / "myrun"
    rundir.checkpoint_dir(run).mkdir(parents=True)
    rundir.recipe_path(run).write_text(yaml.safe_dump(RECIPE))
    rundir.history_path(run).write_text(
        "epoch,train_loss,val_loss,val_miou,val_pixel_acc,lr,time_s\n1,2.0,,0.25,0.5,0.01,3.5\n"
        "2,1.5,1.6,0.5,0.75,0.005,7\n"
    )
    if finished:
        rundir.metrics_path(run).write_text(json.dumps({"miou": 0.5, "split": "test"}))
        np.save(rundir.confusion_path(run), np.eye(3, dtype=np.int64))
        rundir.model_dir(run).mkdir()
        (rundir.model_dir(run) / rundir.MODEL_CONFIG_FILE).write_text(json.dumps({"model": {}}))
    return run


def test_a_finished_run_is_read_through_one_layout(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert rundir.is_finished(run) and rundir.holds_run(run)
    assert rundir.model_source(run) == rundir.model_dir(run)
    assert rundir.read_metrics(run)["miou"] == 0.5
    assert rundir.read_metrics(rundir.metrics_path(run)) == rundir.read_metrics(run)
    assert rundir.read_recipe(run) == RECIPE
    assert rundir.read_confusion(run).shape == (3, 3)
    history = rundir.read_history(run)
    assert [row["epoch"] for row in history] == [1, 2]
    assert isinstance(history[0]["epoch"], int) and math.isnan(history[0]["val_loss"])
    assert history[1]["time_s"] == 7.0
    assert rundir.read_history(rundir.history_path(run)) == history


def test_unfinished_runs_and_their_checkpoints(tmp_path: Path) -> None:
    run = _run(tmp_path, finished=False)
    assert not rundir.is_finished(run) and rundir.holds_run(run)
    assert rundir.model_source(run) is None and not rundir.can_resume(run)
    rundir.checkpoint_path(run, rundir.LAST).write_bytes(b"x")
    assert rundir.can_resume(run) and rundir.model_source(run).name == "last.ckpt"
    rundir.checkpoint_path(run, rundir.BEST).write_bytes(b"x")
    assert rundir.model_source(run) == run / "checkpoints" / "best.ckpt"
    rundir.metrics_path(run).write_text("{not json")
    assert not rundir.is_finished(run)
    with pytest.raises(DataError, match="not valid JSON"):
        rundir.read_metrics(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not rundir.holds_run(empty) and rundir.read_history(empty) == []
    assert rundir.read_recipe(empty) is None and rundir.read_confusion(empty) is None


def test_history_with_old_columns_or_a_broken_epoch(tmp_path: Path) -> None:
    path = tmp_path / rundir.HISTORY_FILE
    path.write_text("epoch,train_loss\n1,0.5\n")
    (row,) = rundir.read_history(path)
    assert set(rundir.HISTORY_COLUMNS) <= set(row) and math.isnan(row["val_miou"])
    path.write_text("epoch,train_loss\n1,0.5\nfirst,0.4\n")
    with pytest.raises(DataError, match=r"line 3: epoch 'first'"):
        rundir.read_history(path)


def test_find_recipe_and_names_for_every_saved_form(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert rundir.find_recipe(run) == RECIPE
    assert rundir.find_recipe(rundir.model_dir(run)) == RECIPE  # from the run beside it
    own = {**RECIPE, "name": "from-config"}
    config = rundir.model_dir(run) / rundir.MODEL_CONFIG_FILE
    config.write_text(json.dumps({"model": {}, "recipe": own}))
    assert rundir.find_recipe(run) == own
    ckpt = rundir.checkpoint_path(run, rundir.BEST)
    torch.save({"hyper_parameters": {"recipe": {"name": "in-ckpt"}}}, ckpt)
    assert rundir.find_recipe(ckpt) == {"name": "in-ckpt"}
    ckpt.write_bytes(b"PK\x03\x04 cut")  # unreadable: the run's recipe.yaml still answers
    assert rundir.find_recipe(ckpt) == RECIPE
    assert rundir.source_name(ckpt) == rundir.source_name(rundir.model_dir(run)) == "myrun"
    loose = tmp_path / "weights.onnx"
    loose.write_bytes(b"")
    assert rundir.source_name(loose) == "weights" and rundir.find_recipe(loose) is None


def test_resolve_device_checks_names() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_the_loader_picks_model_dir_then_checkpoints(tmp_path: Path) -> None:
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.models import build_model

    run = _run(tmp_path, finished=False)
    with pytest.raises(ConfigError, match="neither a model folder"):
        load_inference_model(run)
    torch.manual_seed(0)
    model = build_model("unet", num_classes=3, base_channels=4, depth=2)
    save_pretrained(model, rundir.model_dir(run), classmap=CLASSMAP, mean=(0.5,) * 3,
                    std=(0.25,) * 3, extra={"inference": {"size": [32, 48], "flip": True}})
    loaded = load_inference_model(run, "cpu")
    assert loaded.source == rundir.model_dir(run)
    assert loaded.classmap.names == CLASSMAP.names and list(loaded.mean) == [0.5] * 3
    # Every saved setting, flip too (issue 28: Predictor and evaluate honour the same ones);
    # what the folder's inference section leaves unsaid comes from the run's recipe.
    assert loaded.settings == {"size": [32, 48], "flip": True, "mode": "whole"}
    assert loaded.recipe == RECIPE  # no recipe in config.json: the run's recipe.yaml
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)["out"], model.eval()(x)["out"])
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ConfigError, match="unknown model file type '.txt'"):
        load_inference_model(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="model not found"):
        load_inference_model(tmp_path / "missing")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    pytest.importorskip("onnxruntime")
    with pytest.raises(ModelError, match="bad.onnx: ONNX Runtime cannot load it"):
        load_inference_model(tmp_path / "bad.onnx")
