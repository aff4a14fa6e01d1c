"""A run resolved once, before anything trains: :class:`RunPlan` and :func:`resolve_run`.

Every choice a training makes from its recipe, its data and this machine is made here, once:
the checkpoint a resume continues from, the device, the process count, the CPU threads, the
training crop (capped at the images' size), the class weights, the split names and the
precision (``trainer.precision: auto`` measured on the built model, or the choice recorded
when the run started). The trainer, the final evaluation and the result only read the plan.

The recipe itself is saved as ``recipe.yaml`` (its precision the one chosen) and the class
weights by name as ``class_weights.json``; ``plan.json`` holds the rest, so a run folder
tells how the run was resolved without repeating what those files hold.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from seglab.artifacts import device as hardware  # module attribute: tests stand in a CPU
from seglab.artifacts import rundir
from seglab.config import Recipe
from seglab.data.formats import open_source
from seglab.data.stats import class_weights, compute_pixel_stats
from seglab.engine import module as segmentation  # module attributes: tests stand in a builder
from seglab.engine import precision_choice
from seglab.engine.speed import crop_for_images
from seglab.engine.trainer_setup import process_count
from seglab.errors import ConfigError
from seglab.io_utils import atomic_write_text

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class RunPlan:
    """One training, resolved: what it trains, where, how, and on which splits.

    ``recipe`` is validated and final (``trainer.precision`` is ``precision``); treat it as
    read-only. ``val_split`` is None when the data has no validation images (no best
    checkpoint, no early stopping); ``evaluate_split`` is the split scored at the end (None:
    none).
    """

    recipe: Recipe
    run_dir: Path
    resume_from: Path | None
    device: str
    processes: int
    threads: int
    precision: str
    precision_note: str | None
    crop: tuple[int, int] | None
    class_weights: tuple[float, ...] | None
    train_split: str
    val_split: str | None
    evaluate_split: str | None

    @property
    def has_val(self) -> bool:
        """Whether the run validates (and so keeps a best checkpoint)."""
        return self.val_split is not None

    def to_dict(self) -> dict[str, Any]:
        """The facts of the plan that ``recipe.yaml`` and ``class_weights.json`` do not hold."""
        return {
            "device": self.device,
            "processes": self.processes,
            "threads": self.threads,
            "precision": self.precision,
            "precision_note": self.precision_note,
            "crop": list(self.crop) if self.crop else None,
            "splits": {"train": self.train_split, "val": self.val_split,
                       "evaluate": self.evaluate_split},
            "resumed_from": str(self.resume_from) if self.resume_from else None,
        }

    def describe(self) -> str:
        """One line for the start of training: where and how it runs."""
        crop = f"{self.crop[0]}x{self.crop[1]}" if self.crop else "full images"
        scored = self.evaluate_split or "none"
        return (f"plan: {self.device} x{self.processes}, {self.threads} threads, "
                f"{self.precision}, crop {crop}, scored on {scored} "
                f"({plan_path(self.run_dir)})")

    def save(self) -> Path:
        """Write ``plan.json`` into the run folder (atomically); returns its path."""
        path = plan_path(self.run_dir)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def plan_path(run_dir: str | os.PathLike) -> Path:
    """The ``plan.json`` of a run folder."""
    return Path(run_dir) / PLAN_FILE


@dataclass(frozen=True)
class Resolved:
    """A plan with what resolving it built: the opened data and the model (the ``auto``
    precision probe times this model, so it is built once, here)."""

    plan: RunPlan
    source: Any
    model: torch.nn.Module


def resolve_run(recipe: Recipe, run_dir: Path, *, resume: bool = False, source: Any = None,
                evaluate_split: str | None = "auto", zero: bool = True) -> Resolved:
    """Resolve ``recipe`` into a :class:`RunPlan` for ``run_dir``; nothing is written.

    ``source`` replaces the recipe's dataset (k-fold passes one per fold); ``evaluate_split``
    is the split scored at the end (``auto``: test, else val; None: none); ``zero`` is whether
    this process is rank 0 (the other ranks do not check the folder when starting afresh).

    Raises:
        ConfigError: a folder that already holds a run, a resume without a checkpoint, or a
            recipe that does not fit the data or this machine.
    """
    resume_from = check_run_dir(run_dir, resume) if zero or resume else None
    L.seed_everything(recipe.trainer.seed, workers=True, verbose=False)
    if source is None:
        source = open_source(recipe.data.spec, **recipe.data.options)
    source.join_splits(recipe.data.train_split)  # "train+val"
    cfg = recipe.trainer
    try:
        device = hardware.accelerator_device(cfg.accelerator)
    except ConfigError as exc:  # named as the recipe spells it
        raise ConfigError(f"trainer.accelerator={cfg.accelerator!r}: {exc}") from None
    crop = train_crop(recipe, source)
    weights = _class_weights(recipe, source)
    model = segmentation.build_segmentation_model(recipe, source.classmap.num_classes)
    processes = process_count(cfg.devices, cfg.num_nodes) or 1
    precision, note = _precision(recipe, model, crop, device, processes, run_dir, resume)
    if precision != cfg.precision:
        recipe = recipe.model_copy(deep=True)
        recipe.trainer.precision = precision
    data = recipe.data
    plan = RunPlan(
        recipe=recipe,
        run_dir=run_dir,
        resume_from=resume_from,
        device=device,
        processes=processes,
        threads=torch.get_num_threads(),
        precision=precision,
        precision_note=note,
        crop=crop,
        class_weights=None if weights is None else tuple(weights),
        train_split=data.train_split,
        val_split=data.val_split if data.val_split and source.splits.get(data.val_split) else None,
        evaluate_split=_evaluation_split(recipe, source, evaluate_split),
    )
    log.info("%s", plan.describe())
    return Resolved(plan, source, model)


def check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuses to overwrite a run.

    A folder without a checkpoint, ``model/`` or metrics (a run that failed or was killed
    before its first checkpoint) is not a run: it is trained again from the start.
    """
    last = rundir.checkpoint_path(run_dir, rundir.LAST)
    if resume:
        if last.is_file():
            return last
        if rundir.recipe_path(run_dir).is_file() and not rundir.has_trained(run_dir):
            log.warning("%s holds no checkpoint yet: training from the start", run_dir)
            return None
        raise ConfigError(f"cannot resume: {last} does not exist (was the run ever started?)")
    if rundir.has_trained(run_dir):
        raise ConfigError(
            f"run folder {run_dir} already holds a run: pass --resume to continue it, or choose "
            "another name (--name / --run-dir)"
        )
    return None


def train_crop(recipe: Recipe, source: Any) -> tuple[int, int] | None:
    """The training crop: the recipe's, capped at the training images' size (with a warning)."""
    pairs = source.splits.get(recipe.data.train_split, [])
    return crop_for_images(recipe.augment.crop_size, recipe.augment.resize, pairs)


def _class_weights(recipe: Recipe, source: Any) -> list[float] | None:
    """Loss class weights from the training split's pixel statistics (None when unweighted):
    the same ``class_weights`` on the same ``PixelStats`` as ``seglab data inspect``."""
    strategy = recipe.loss.class_weights
    if not strategy or strategy == "none":
        return None
    stats = compute_pixel_stats(source.dataset(recipe.data.train_split))
    weights = class_weights(
        stats, strategy, names=source.classmap.names, **recipe.loss.class_weight_params
    )
    return [float(w) for w in weights]


def _precision(recipe: Recipe, model: torch.nn.Module, crop: tuple[int, int] | None,
               device: str, processes: int, run_dir: Path,
               resume: bool) -> tuple[str, str | None]:
    """The precision to train in and the line the start of training prints about it.

    ``trainer.precision: auto`` on one CPU process is bf16 or fp32, whichever trains this
    model faster here at the training ``crop`` (``engine.precision_choice``); on resume, the
    run's recorded choice. A CPU without bf16 hardware trains in fp32 without a probe
    (emulated bf16 is several times slower). GPUs, several processes (every rank must agree)
    and runs without a fixed crop keep ``auto`` (bf16 autocast on a CPU with bf16 hardware,
    else fp32).
    """
    cfg = recipe.trainer
    if cfg.precision != "auto" or device == "cuda" or crop is None or processes > 1:
        return cfg.precision, None
    stored = None
    if resume and rundir.recipe_path(run_dir).is_file():
        stored = (rundir.read_recipe(run_dir) or {}).get("trainer", {}).get("precision")
    if stored in ("bf16", "fp32"):
        return stored, f"precision: {stored} (auto, as chosen when the run started)"
    if not hardware.cpu_bf16_native():
        return "fp32", f"precision: fp32 (auto: {precision_choice.NO_BF16_HARDWARE})"
    bands = len(recipe.data.mean) if recipe.data.mean else 3
    choice = precision_choice.choose_cpu_precision(model, tuple(crop), bands, cfg.channels_last,
                                                   batch=recipe.data.batch_size)
    return choice.precision, choice.describe()


def _evaluation_split(recipe: Recipe, source: Any, requested: str | None) -> str | None:
    if requested is None:
        return None
    if requested != "auto":
        return requested
    for split in (recipe.data.test_split, recipe.data.val_split):
        if split and source.splits.get(split):
            return split
    return None
