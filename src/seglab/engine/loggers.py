"""Experiment trackers for ``trainer.loggers`` and the run's ``curves.png``.

``history.csv`` is always written (seglab.engine.callbacks). ``trainer.loggers`` adds
Lightning's loggers beside it, each under the run folder:

- ``csv``: ``<run>/csv/metrics.csv`` (Lightning's per-step CSV);
- ``tensorboard``: ``<run>/tensorboard/`` (``tensorboard --logdir runs``); extra ``tensorboard``;
- ``mlflow``: a store of the run's own in ``<run>/mlruns/`` (``mlflow.db``, an SQLite tracking
  URI, as MLflow 3 retired its ``file:`` store; artifacts in ``mlruns/artifacts/``), unless
  ``MLFLOW_TRACKING_URI`` names a server or a shared store (experiment:
  ``MLFLOW_EXPERIMENT_NAME`` or the recipe's name; run: the run folder's name); extra ``mlflow``.
  Browse it with ``mlflow ui --backend-store-uri sqlite:///runs/<name>/mlruns/mlflow.db``;
- ``wandb``: Weights & Biases, files in ``<run>/wandb/`` (project: ``WANDB_PROJECT`` or
  ``seglab``); needs ``pip install 'seglab[wandb]'``.

The module logs ``train_loss``/``lr`` every ``trainer.log_every_n_steps`` steps and the val
metrics once per validation; an epoch shorter than that interval would log no training
values at all, so :class:`EpochMetricsToLoggers` also sends every ``history.csv`` row
(``epoch/train_loss``, ``epoch/val_miou``, ``epoch/lr``, ...) to the loggers.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch import loggers
from matplotlib.ticker import MaxNLocator

from seglab.artifacts import rundir
from seglab.config import Recipe
from seglab.errors import ConfigError
from seglab.io_utils import atomic_path
from seglab.metrics import VAL_LOSS, VAL_MIOU
from seglab.report.plots import plt, to_png

log = logging.getLogger(__name__)

CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
CSV_DIR = "csv"
WANDB_DIR = "wandb"
# Logger name -> (import name it needs, how to install it).
_NEEDS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install 'seglab[tensorboard]'"),
    "mlflow": (("mlflow",), "pip install 'seglab[mlflow]'"),
    "wandb": (("wandb",), "pip install 'seglab[wandb]'"),
}


def _require(name: str) -> None:
    modules, install = _NEEDS[name]
    if not any(importlib.util.find_spec(module) is not None for module in modules):
        raise ConfigError(
            f"trainer.loggers: {name} needs the {modules[0]} package, which is not installed: "
            f"{install} (or remove {name} from trainer.loggers)"
        )


def build_loggers(recipe: Recipe, run_dir: str | os.PathLike) -> list[Any] | bool:
    """Lightning loggers for ``recipe.trainer.loggers`` (False when none: history.csv only)."""
    names = list(dict.fromkeys(recipe.trainer.loggers))  # each once, in the recipe's order
    if not names:
        return False
    run_dir = Path(run_dir)
    loggers = []
    for name in names:
        if name in _NEEDS:
            _require(name)
        loggers.append(_logger(name, recipe, run_dir))
    return loggers


def _logger(name: str, recipe: Recipe, run_dir: Path) -> Any:

    if name == "csv":
        return loggers.CSVLogger(save_dir=str(run_dir), name=CSV_DIR, version="")
    if name == "tensorboard":
        return loggers.TensorBoardLogger(
            save_dir=str(run_dir), name=TENSORBOARD_DIR, version="", default_hp_metric=False
        )
    if name == "mlflow":
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:
            uri = mlflow_uri(run_dir)
            (run_dir / MLFLOW_DIR).mkdir(parents=True, exist_ok=True)
            artifacts = (run_dir.resolve() / MLFLOW_DIR / "artifacts").as_uri()
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or recipe.name
        return loggers.MLFlowLogger(
            experiment_name=experiment, run_name=run_dir.resolve().name, tracking_uri=uri,
            artifact_location=artifacts,
            tags={"seglab.run_dir": str(run_dir.resolve()), "seglab.model": recipe.model.name},
        )
    if name == "wandb":
        (run_dir / WANDB_DIR).mkdir(parents=True, exist_ok=True)
        return loggers.WandbLogger(
            project=os.environ.get("WANDB_PROJECT") or "seglab", name=run_dir.resolve().name,
            save_dir=str(run_dir),
        )
    raise ConfigError(
        f"trainer.loggers: unknown logger {name!r} (expected csv, tensorboard, mlflow, wandb)"
    )


def mlflow_uri(run_dir: str | os.PathLike) -> str:
    """The tracking URI of a run's own MLflow store: ``sqlite:///<run>/mlruns/mlflow.db``."""
    return f"sqlite:///{(Path(run_dir).resolve() / MLFLOW_DIR / 'mlflow.db').as_posix()}"


class EpochMetricsToLoggers(L.Callback):
    """After each epoch, the ``history.csv`` row just written goes to every logger.

    Placed after ``HistoryCSV`` (same hook), so the row exists; logged at the global step, as
    Lightning logs its own values, under ``epoch/<column>``.
    """

    def __init__(self, history: str | os.PathLike) -> None:
        self.history = Path(history)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.loggers or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1
        rows = [r for r in rundir.read_history(self.history) if int(r["epoch"]) == epoch]
        if not rows:
            return
        values = {
            f"epoch/{key}": float(value)
            for key, value in rows[-1].items()
            if key != "epoch" and isinstance(value, int | float) and math.isfinite(value)
        }
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)


class CurvesPNG(L.Callback):
    """Write ``curves.png`` (losses, val mIoU, learning rate by epoch) when training ends."""

    def __init__(self, history: str | os.PathLike, out: str | os.PathLike) -> None:
        self.history = Path(history)
        self.out = Path(out)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.history.is_file():
            write_curves(self.history, self.out)


def tracking_callbacks(recipe: Recipe, run_dir: str | os.PathLike) -> list[L.Callback]:
    """The callbacks behind ``trainer.loggers`` and ``curves.png`` for a run folder."""
    history = rundir.history_path(run_dir)
    callbacks: list[L.Callback] = [CurvesPNG(history, Path(run_dir) / CURVES_FILE)]
    if recipe.trainer.loggers:
        callbacks.insert(0, EpochMetricsToLoggers(history))
    return callbacks


def write_curves(history: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """Plot a ``history.csv`` into ``out`` (PNG); None (nothing written) when it has no rows."""
    rows = rundir.read_history(history)
    if not rows:
        return None
    png = curves_png(rows, title=Path(history).resolve().parent.name)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(png)
    return out


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(int(r["epoch"]), float(r[key])) for r in rows
              if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def curves_png(rows: list[dict[str, Any]], title: str = "") -> bytes:
    """Three panels by epoch: train/val loss, val mIoU (%), learning rate; PNG bytes."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    loss_ax, miou_ax, lr_ax = axes
    for key, label, color in (("train_loss", "train", "#1f77b4"), (VAL_LOSS, "val", "#d62728")):
        xs, ys = _series(rows, key)
        if xs:
            loss_ax.plot(xs, ys, marker="o", markersize=3, label=label, color=color)
    for key in (k for k in rows[-1] if k.startswith("loss_")):  # a two-loss recipe's terms
        xs, ys = _series(rows, key)
        if xs:
            loss_ax.plot(xs, ys, linestyle="--", linewidth=1, label=key[len("loss_"):])
    loss_ax.set_title("loss")
    if loss_ax.lines:
        loss_ax.legend(fontsize=8, frameon=False)
    xs, ys = _series(rows, VAL_MIOU)
    if xs:
        miou_ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, color="#2ca02c")
        best = max(range(len(ys)), key=ys.__getitem__)
        miou_ax.plot([xs[best]], [100 * ys[best]], marker="*", markersize=12, color="#2ca02c")
        miou_ax.set_title(f"val mIoU (%): best {100 * ys[best]:.2f} at epoch {xs[best]}")
    else:
        miou_ax.text(0.5, 0.5, "no validation split", ha="center", va="center",
                     transform=miou_ax.transAxes, color="#777")
        miou_ax.set_title("val mIoU (%)")
    xs, ys = _series(rows, "lr")
    if xs:
        lr_ax.plot(xs, ys, marker="o", markersize=3, color="#9467bd")
    lr_ax.set_title("learning rate (end of epoch)")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    last = max(int(r["epoch"]) for r in rows)
    for ax in axes:
        ax.set_xlim(0.5, last + 0.5)  # whole epochs, a single one included
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return to_png(fig)
