"""trainer.loggers: TensorBoard events, an MLflow run and Lightning's CSV from one tiny run;
curves.png; the model card rewritten with the test metrics; a missing tracker names its extra."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from seglab.artifacts import rundir
from seglab.config import Recipe
from seglab.data.synthetic import make_synthetic
from seglab.engine import fit
from seglab.engine.loggers import build_loggers, curves_png, mlflow_uri, write_curves
from seglab.errors import ConfigError

TINY_UNET = {"name": "unet", "options": {"base_channels": 4, "depth": 2}}


def _recipe(data: Path, **trainer) -> Recipe:
    return Recipe.from_dict({
        "name": "tracked",
        "data": {"spec": f"folder:{data}", "batch_size": 4, "num_workers": 0},
        "model": TINY_UNET,
        "augment": {"crop_size": [32, 32]},
        # 3 steps per epoch, fewer than log_every_n_steps: the epoch rows must still arrive.
        "trainer": {"max_epochs": 2, "progress": False, "checkpoint_every_n_steps": None,
                    "log_every_n_steps": 50, **trainer},
    })


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    data = make_synthetic(tmp_path_factory.mktemp("data") / "syn", n_train=9, n_val=4,
                          n_test=4, size=(32, 40), num_classes=3)
    run = tmp_path_factory.mktemp("runs") / "tracked"
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    try:
        fit(_recipe(data, loggers=["csv", "tensorboard", "mlflow"]), run)
    finally:
        mp.undo()
    return run


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = folder.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_file_holds_the_history(tracked_run: Path) -> None:
    scalars = _scalars(tracked_run / "tensorboard")
    history = rundir.read_history(rundir.history_path(tracked_run))
    assert [r["epoch"] for r in history] == [1, 2]
    for column in ("train_loss", "val_miou", "lr"):
        logged = [value for _, value in scalars[f"epoch/{column}"]]
        assert logged == pytest.approx([r[column] for r in history], rel=1e-6), column
    assert len(scalars["val_miou"]) == 2  # the module's own self.log reaches the logger too


def test_mlflow_run_in_the_run_folder(tracked_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri(tracked_run))
    experiment = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["recipe/model/name"] == "unet"
    history = rundir.read_history(rundir.history_path(tracked_run))
    miou = client.get_metric_history(run.info.run_id, "epoch/val_miou")
    assert [m.value for m in miou] == pytest.approx([r["val_miou"] for r in history], rel=1e-6)
    assert run.data.tags["seglab.model"] == "unet"


def test_lightning_csv_and_history_both_written(tracked_run: Path) -> None:
    text = (tracked_run / "csv" / "metrics.csv").read_text()
    assert "epoch/train_loss" in text.splitlines()[0] and "val_miou" in text.splitlines()[0]
    assert rundir.history_path(tracked_run).is_file()


def test_curves_png_and_model_card_with_metrics(tracked_run: Path) -> None:
    from PIL import Image

    curves = tracked_run / "curves.png"
    with Image.open(curves) as image:
        assert image.format == "PNG" and image.width > 800
    card = (rundir.model_dir(tracked_run) / "README.md").read_text()
    metrics = rundir.read_metrics(tracked_run)
    assert f"| mIoU | {100 * metrics['miou']:.2f} |" in card
    assert "](../curves.png)" in card  # the run's curves, linked from model/


def test_no_loggers_is_history_only(tmp_path: Path) -> None:
    data = make_synthetic(tmp_path / "syn", n_train=4, n_val=0, n_test=0, size=(16, 16),
                          num_classes=2)
    assert build_loggers(_recipe(data), tmp_path / "run") is False


def test_missing_tracker_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_synthetic(tmp_path / "syn", n_train=4, n_val=0, n_test=0, size=(16, 16),
                          num_classes=2)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mlflow", "wandb") else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'seglab\[mlflow\]'"):
        build_loggers(_recipe(data, loggers=["mlflow"]), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"pip install .seglab\[wandb\]."):
        build_loggers(_recipe(data, loggers=["wandb"]), tmp_path / "run")


def test_mlflow_tracking_uri_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    data = make_synthetic(tmp_path / "syn", n_train=4, n_val=0, n_test=0, size=(16, 16),
                          num_classes=2)
    server = f"sqlite:///{(tmp_path / 'shared.db').as_posix()}"  # e.g. a team's store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    (logger,) = build_loggers(_recipe(data, loggers=["mlflow"]), tmp_path / "run")
    assert logger._tracking_uri == server
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    (logger,) = build_loggers(_recipe(data, loggers=["mlflow"]), tmp_path / "run")
    db = (tmp_path / "run" / "mlruns" / "mlflow.db").resolve()
    assert logger._tracking_uri == f"sqlite:///{db.as_posix()}" == mlflow_uri(tmp_path / "run")


def test_curves_from_a_history_without_validation(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text("epoch,train_loss,val_loss,val_miou,val_pixel_acc,lr,time_s\n"
                       "1,1.5,,,,0.01,3\n2,1.2,,,,0.005,6\n")
    assert write_curves(history, tmp_path / "curves.png") == tmp_path / "curves.png"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,train_loss\n")
    assert write_curves(empty, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    assert curves_png([{"epoch": 1, "train_loss": math.nan, "lr": 0.1}])[:4] == b"\x89PNG"
