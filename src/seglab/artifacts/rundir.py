"""The layout of a run folder: the one module that knows its file names and how to read them.

``seglab train`` writes ``runs/<name>/``::

    recipe.yaml            the resolved recipe
    history.csv            one row per epoch (columns :data:`HISTORY_COLUMNS`)
    checkpoints/best.ckpt  best validation mIoU (Lightning checkpoint, plain data)
    checkpoints/last.ckpt  the latest state, for ``--resume``
    model/                 the best weights as a ``save_pretrained`` folder
    metrics.json           final scores on the test split (``miou`` and friends)
    per_class.csv          one row per class
    confusion.npy          the raw confusion matrix (rows = truth, columns = prediction)
    per_image.npz          each test image's counts (their sum is confusion.npy), see
                           seglab.per_image; per_image.csv: each image's scores
    panels/                image | truth | prediction pictures
    kfold.json, fold_<i>/  a k-fold run: the summary, and one run folder per fold

An evaluation folder (``seglab eval --out``) holds the same metrics files. Everything else
(engine, evaluation, predict, export, compare, report, studies) asks this module for the paths.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.config import read_recipe_text
from seglab.errors import ConfigError, DataError, ModelError
from seglab.metrics import MIOU, VAL_LOSS, VAL_MIOU, VAL_PIXEL_ACC
from seglab.yaml_limits import load_yaml

RECIPE_FILE = "recipe.yaml"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.csv"
CONFUSION_FILE = "confusion.npy"
PER_IMAGE_FILE = "per_image.npz"
PER_IMAGE_TABLE_FILE = "per_image.csv"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".ckpt"
BEST = "best"  # checkpoint stems, as Lightning's ModelCheckpoint(filename=...) takes them
LAST = "last"
MODEL_DIR = "model"
MODEL_CONFIG_FILE = "config.json"  # of a save_pretrained folder (seglab.artifacts.pretrained)
PANELS_DIR = "panels"
KFOLD_FILE = "kfold.json"
# Any of these in a folder means it already holds a run (fit refuses to overwrite it).
RUN_MARKERS = (RECIPE_FILE, HISTORY_FILE, CHECKPOINT_DIR)
HISTORY_COLUMNS = ("epoch", "train_loss", VAL_LOSS, VAL_MIOU, VAL_PIXEL_ACC, "lr", "time_s")

PathLike = str | os.PathLike


# --- paths -----------------------------------------------------------------------------------


def recipe_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / RECIPE_FILE


def history_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / HISTORY_FILE


def metrics_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / METRICS_FILE


def per_class_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / PER_CLASS_FILE


def confusion_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / CONFUSION_FILE


def per_image_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / PER_IMAGE_FILE


def per_image_table_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / PER_IMAGE_TABLE_FILE


def panels_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / PANELS_DIR


def model_dir(run_dir: PathLike) -> Path:
    """The run's best weights as a ``save_pretrained`` folder."""
    return Path(run_dir) / MODEL_DIR


def checkpoint_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_path(run_dir: PathLike, which: str = BEST) -> Path:
    """``checkpoints/best.ckpt`` (``which=BEST``) or ``checkpoints/last.ckpt`` (``LAST``)."""
    return checkpoint_dir(run_dir) / f"{which}{CHECKPOINT_SUFFIX}"


def kfold_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / KFOLD_FILE


def fold_dir(run_dir: PathLike, index: int) -> Path:
    """The run folder of fold ``index`` inside a k-fold run."""
    return Path(run_dir) / f"fold_{index}"


# --- what a folder is ------------------------------------------------------------------------


def is_model_dir(path: PathLike) -> bool:
    """True when ``path`` is a ``save_pretrained`` folder (it holds ``config.json``)."""
    return (Path(path) / MODEL_CONFIG_FILE).is_file()


def holds_run(path: PathLike) -> bool:
    """True when a run was started in ``path`` (a recipe, history or checkpoints are there)."""
    return any((Path(path) / name).exists() for name in RUN_MARKERS)


def has_trained(path: PathLike) -> bool:
    """True when a run in ``path`` got far enough to keep: a checkpoint, ``model/`` or
    ``metrics.json``. A folder with only a recipe or history (a run that failed or was killed
    before its first checkpoint) is not one: ``fit`` may start it again."""
    path = Path(path)
    return (
        any(checkpoint_path(path, which).is_file() for which in (BEST, LAST))
        or is_model_dir(model_dir(path))
        or metrics_path(path).is_file()
    )


def can_resume(run_dir: PathLike) -> bool:
    """True when ``checkpoints/last.ckpt`` exists, so ``fit(..., resume=True)`` can continue."""
    return checkpoint_path(run_dir, LAST).is_file()


def is_finished(run_dir: PathLike) -> bool:
    """True when training finished: ``metrics.json`` with a numeric mIoU, and ``model/``.

    A folder with only checkpoints (killed, or still training) or a broken ``metrics.json``
    is not finished.
    """
    if not is_model_dir(model_dir(run_dir)):
        return False
    try:
        metrics = json.loads(metrics_path(run_dir).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(metrics, dict) and _is_number(metrics.get(MIOU))


def model_source(run_dir: PathLike) -> Path | None:
    """The saved model a run folder offers: ``model/``, else ``best.ckpt``, else ``last.ckpt``."""
    if is_model_dir(model_dir(run_dir)):
        return model_dir(run_dir)
    for which in (BEST, LAST):
        if checkpoint_path(run_dir, which).is_file():
            return checkpoint_path(run_dir, which)
    return None


def run_dir_of(source: PathLike) -> Path | None:
    """The run folder that ``source`` (a run folder, its ``model/`` or a checkpoint) lies in."""
    path = Path(source).expanduser()
    if path.suffix == CHECKPOINT_SUFFIX and path.parent.name == CHECKPOINT_DIR:
        return path.parent.parent
    if path.is_dir() and path.name == MODEL_DIR and holds_run(path.parent):
        return path.parent
    if path.is_dir() and holds_run(path):
        return path
    return None


def source_name(source: PathLike) -> str:
    """A short name for a saved model: its run folder's name, else the file stem / folder name."""
    path = Path(source).expanduser()
    run = run_dir_of(path)
    if run is not None:
        return run.resolve().name
    return (path.stem if path.is_file() else path.resolve().name) or str(source)


# --- reading ---------------------------------------------------------------------------------


def _file(path: PathLike, name: str) -> Path:
    """A run folder or the file itself -> the file."""
    path = Path(path)
    return path if path.name == name or path.is_file() else path / name


def read_metrics(path: PathLike) -> dict[str, Any]:
    """The ``metrics.json`` of a run/evaluation folder (or that file), checked to hold ``miou``."""
    path = _file(path, METRICS_FILE)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: metrics.json not found (is this a finished run folder?)") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(metrics, dict) or MIOU not in metrics:
        raise DataError(f"{path}: metrics document has no 'miou' key")
    return metrics


def read_recipe(path: PathLike) -> dict[str, Any] | None:
    """The resolved recipe (plain data) of a run folder (or its ``recipe.yaml``), None if absent."""
    path = _file(path, RECIPE_FILE)
    if not path.is_file():
        return None
    try:
        recipe = load_yaml(read_recipe_text(path), f"recipe file {path}")
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    return recipe if isinstance(recipe, dict) else None


def read_history(path: PathLike) -> list[dict[str, Any]]:
    """Rows of a run's ``history.csv`` (or that file); ``[]`` when there is none.

    ``epoch`` is an int; every other cell a float, empty or unreadable cells NaN. Columns of
    :data:`HISTORY_COLUMNS` missing from an older file read as NaN.
    """
    path = _file(path, HISTORY_FILE)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for line, raw in enumerate(csv.DictReader(handle), start=2):
            row: dict[str, Any] = {key: math.nan for key in HISTORY_COLUMNS}
            for key, text in raw.items():
                if key is not None:
                    row[key] = history_cell(text)
            epoch = row["epoch"]
            if not _is_number(epoch) or epoch != int(epoch):
                raise DataError(f"{path} line {line}: epoch {raw.get('epoch')!r} is not a number")
            row["epoch"] = int(epoch)
            rows.append(row)
    return rows


def read_confusion(path: PathLike) -> np.ndarray | None:
    """The raw confusion matrix of a run (or its ``confusion.npy``), None when absent."""
    path = _file(path, CONFUSION_FILE)
    if not path.is_file():
        return None
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the confusion matrix ({exc})") from exc
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DataError(f"{path}: confusion matrix must be square, got shape {matrix.shape}")
    return matrix


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """A Lightning checkpoint as plain data (``torch.load(weights_only=True)``: no unpickling)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path}: refused to load: the checkpoint holds pickled Python objects, not plain "
            f"data (torch.load weights_only=True: {first}); use a checkpoint written by "
            "seglab train"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelError(
            f"{path}: cannot read checkpoint (corrupt, truncated or not a checkpoint): {exc}"
        ) from exc
    if not isinstance(checkpoint, dict):
        raise ModelError(f"{path} is not a seglab training checkpoint (not a dictionary)")
    return checkpoint


def checkpoint_recipe(checkpoint: dict[str, Any], path: PathLike) -> dict[str, Any] | None:
    """The recipe inside a loaded checkpoint, else the ``recipe.yaml`` of the run it lies in."""
    recipe = (checkpoint.get("hyper_parameters") or {}).get("recipe")
    if isinstance(recipe, dict):
        return recipe
    run = run_dir_of(path)
    return read_recipe(run) if run is not None else None


def find_recipe(source: PathLike) -> dict[str, Any] | None:
    """The training recipe (plain data) saved with a run folder, model folder or checkpoint.

    Looks at a model folder's ``config.json`` (its ``recipe`` field), the run's
    ``recipe.yaml`` and a checkpoint's hyper-parameters; None when there is no recipe.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        for folder in (path, model_dir(path)):
            if is_model_dir(folder):
                try:
                    config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
                except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                    config = None  # the model loader reports a broken config.json
                if isinstance(config, dict) and isinstance(config.get("recipe"), dict):
                    return config["recipe"]
        run = run_dir_of(path)
        return read_recipe(run) if run is not None else read_recipe(path)
    if path.suffix == CHECKPOINT_SUFFIX and path.is_file():
        try:
            return checkpoint_recipe(read_checkpoint(path), path)
        except ModelError:  # an unreadable checkpoint is reported by the model loader
            run = run_dir_of(path)
            return read_recipe(run) if run is not None else None
    return None


def history_cell(text: str | None) -> float:
    """One cell of ``history.csv`` (other than ``epoch``) as :func:`read_history` reads it:
    a float, NaN when empty or unreadable."""
    try:
        return float(text) if text not in ("", None) else math.nan
    except ValueError:
        return math.nan


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
