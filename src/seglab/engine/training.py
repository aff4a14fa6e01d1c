"""Train a recipe into a run folder: Lightning loop, checkpoints, history, final evaluation.

``train_one(recipe, run_dir)`` (which :func:`seglab.engine.fit` calls) resolves the run once
(:func:`seglab.engine.run_plan.resolve_run`), then writes ``runs/<name>/``:
``recipe.yaml`` (resolved), ``plan.json``, ``checkpoints/best.ckpt`` and
``checkpoints/last.ckpt`` (``last`` also every ``trainer.checkpoint_every_n_steps`` steps,
so a killed run loses little),
``history.csv``, ``model/`` (the best weights as a ``save_pretrained`` folder) and the
test-split evaluation (``metrics.json``, ``per_class.csv``,
``confusion.npy``, ``panels/``). ``train_one(recipe, run_dir, resume=True)`` continues from
``last.ckpt``, mid-epoch included: with ``trainer.seed`` and ``trainer.deterministic`` the
resumed run ends as the uninterrupted one would (the RNG states and the position in the
epoch travel in the checkpoint: :class:`seglab.engine.callbacks.ResumeState`).
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from seglab import stops
from seglab.allocator import keep_freed_memory
from seglab.artifacts import model_card, rundir
from seglab.artifacts.model import recipe_inference
from seglab.artifacts.pretrained import save_pretrained
from seglab.config import Recipe
from seglab.data.datamodule import SegDataModule
from seglab.data.transforms import train_transform
from seglab.engine import distributed
from seglab.engine.callbacks import (
    AtomicCheckpointIO,
    HistoryCSV,
    ResumeState,
    StepCheckpoint,
    TrainingClock,
)
from seglab.engine.evaluation import score
from seglab.engine.health import flat_loss_warning
from seglab.engine.module import SegmentationModule
from seglab.engine.resume_rule import check_resume_edits
from seglab.engine.run_plan import RunPlan, resolve_run
from seglab.engine.run_result import FitResult
from seglab.engine.run_start import RunStart, parameters_line, save_class_weights
from seglab.engine.speed import SpeedReport
from seglab.engine.stopping import StopOnSignal, stop_message
from seglab.engine.trainer_setup import build_trainer, quiet_lightning
from seglab.errors import ModelError
from seglab.io_utils import clean_stale_temps
from seglab.metrics import BEST_VAL_MIOU, VAL_MIOU

log = logging.getLogger(__name__)


def _datamodule(recipe: Recipe, source: Any, crop: tuple[int, int] | None) -> SegDataModule:
    """The data layer's ``SegDataModule`` with the recipe's training augmentation at ``crop``
    (:func:`seglab.engine.run_plan.train_crop`)."""
    aug = recipe.augment
    transform = train_transform(
        crop,
        scale_range=aug.scale_range,
        hflip=aug.hflip,
        rotation=aug.rotation,
        brightness=aug.brightness,
        saturation=aug.saturation,
        noise_sigma=aug.noise_sigma,
        resize=aug.resize,
        ignore_index=source.classmap.ignore_index,
    )
    return SegDataModule(
        source,
        batch_size=recipe.data.batch_size,
        num_workers=recipe.data.num_workers,
        train_transform=transform,
        eval_transform=None,  # labels stay at their own size; eval_resize happens on device
        seed=recipe.trainer.seed,
        train_split=recipe.data.train_split,
        val_split=recipe.data.val_split or "val",
        test_split=recipe.data.test_split or "test",
        cache=recipe.data.cache,
    )


def _callbacks(plan: RunPlan, notes: Sequence[str]) -> tuple[list[Any], Any, Any, Any]:
    """seglab's own callbacks: ``(callbacks, clock, best checkpoint or None, history)``."""
    trainer_cfg = plan.recipe.trainer
    run_dir = plan.run_dir
    ckpt_dir = rundir.checkpoint_dir(run_dir)
    budget = trainer_cfg.max_minutes * 60 if trainer_cfg.max_minutes else None
    clock = TrainingClock(budget_s=budget, max_epochs=trainer_cfg.max_epochs)
    history = HistoryCSV(rundir.history_path(run_dir), clock)
    callbacks: list[L.Callback] = [clock, history]
    if trainer_cfg.progress:  # images/s and the epoch estimate, early in the first epoch
        callbacks.append(SpeedReport(notes=notes, resumed=plan.resume_from is not None))
    best = None
    if plan.has_val:
        best = ModelCheckpoint(
            dirpath=ckpt_dir,
            filename=rundir.BEST,
            monitor=VAL_MIOU,
            mode="max",
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        callbacks.append(best)
        if trainer_cfg.early_stop_patience:
            callbacks.append(
                EarlyStopping(
                    monitor=VAL_MIOU, mode="max", patience=trainer_cfg.early_stop_patience,
                    check_finite=False,
                )
            )
    # last.ckpt at the end of every epoch (validated or not: with trainer.val_every > 1
    # Lightning would otherwise save only after validations), and every N steps within it.
    callbacks.append(
        ModelCheckpoint(
            dirpath=ckpt_dir, filename=rundir.LAST, save_top_k=1, enable_version_counter=False,
            save_on_train_epoch_end=True,
        )
    )
    if trainer_cfg.checkpoint_every_n_steps:
        callbacks.append(
            StepCheckpoint(
                dirpath=ckpt_dir,
                filename=rundir.LAST,
                save_top_k=1,
                every_n_train_steps=trainer_cfg.checkpoint_every_n_steps,
                enable_version_counter=False,
            )
        )
    return callbacks, clock, best, history


def _read_resume_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint ``--resume`` continues from, read as plain data (weights_only): a
    pickle payload or a file that is no training checkpoint is a clear error naming it."""
    checkpoint = rundir.read_checkpoint(path)
    missing = [key for key in ("state_dict", "loops", "optimizer_states") if key not in checkpoint]
    if missing:
        raise ModelError(
            f"{path} is not a seglab training checkpoint that can be resumed (it lacks "
            f"{', '.join(missing)})"
        )
    return checkpoint


def _write_recipe(recipe: Recipe, run_dir: Path) -> None:
    """``recipe.yaml``, rewritten on resume when overrides changed the recipe."""
    path = rundir.recipe_path(run_dir)
    if path.is_file() and rundir.read_recipe(run_dir) == recipe.to_dict():
        return
    recipe.to_yaml(path)


def train_one(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool = False,
    source: Any = None,
    evaluate_split: str | None = "auto",
    callbacks: Sequence[Any] = (),
) -> FitResult:
    """Train once into ``run_dir`` and evaluate: resolve the run (:mod:`.run_plan`), train,
    score; returns the :class:`~seglab.engine.run_result.FitResult`.

    ``source`` replaces the recipe's dataset (k-fold passes one ``DataSource`` per fold);
    ``evaluate_split`` is the split scored at the end (``auto``: test, else val; None: none);
    ``callbacks`` are extra Lightning callbacks, run after seglab's own (a study's pruner).

    Every check (model, freeze policy, precision, data, the resumed checkpoint) runs before
    anything is written to the folder. The caller holds the folder's lock
    (:func:`seglab.engine.fitting.fit`).
    """
    run_dir = Path(run_dir)
    quiet_lightning()
    keep_freed_memory()  # each step reuses the last one's pages (seglab.allocator)
    # Lightning's DDP launcher re-runs the command in each extra process: rank 0 alone checks
    # and writes the run folder (the others find it already started).
    zero = distributed.is_rank_zero()
    resolved = resolve_run(recipe, run_dir, resume=resume, source=source,
                           evaluate_split=evaluate_split, zero=zero)
    plan, source = resolved.plan, resolved.source
    recipe, classmap = plan.recipe, source.classmap
    if zero:  # temporaries of a save that was killed (SIGKILL leaves no chance to clean)
        for which in (rundir.LAST, rundir.BEST):
            clean_stale_temps(rundir.checkpoint_path(run_dir, which))
    weights = list(plan.class_weights) if plan.class_weights is not None else None
    module = SegmentationModule(recipe, classmap, class_weights=weights, model=resolved.model)
    datamodule = _datamodule(recipe, source, plan.crop)
    notes = [plan.precision_note] if plan.precision_note else []
    wired, clock, best, history = _callbacks(plan, notes)
    resume_state = ResumeState(datamodule)
    stopper = StopOnSignal(run_dir, rundir.checkpoint_path(run_dir, rundir.LAST))
    announce = RunStart([*_start_lines(recipe, run_dir, source), parameters_line(module.model)],
                        rundir.history_path(run_dir),
                        resumed=plan.resume_from is not None)
    trainer = build_trainer(
        recipe, run_dir, [resume_state, stopper, *wired, announce, *callbacks], plan.has_val,
        plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    datamodule.check_train_split(trainer.world_size)
    if plan.resume_from is not None:  # edits the checkpoint would silently override are refused
        check_resume_edits(_read_resume_checkpoint(plan.resume_from), recipe.to_dict(),
                           classmap.to_dict(), plan.resume_from)
    if zero:  # everything checked: only now does the folder receive files
        _write_recipe(recipe, run_dir)
        plan.save()
        announce.lines += save_class_weights(run_dir, classmap.names, weights,
                                             str(recipe.loss.class_weights))
        if plan.resume_from is None:
            rundir.history_path(run_dir).unlink(missing_ok=True)  # a failed start's rows
    try:
        _fit_stoppable(trainer, module, datamodule, plan.resume_from, run_dir)
    except RuntimeError as exc:  # a dead peer: say so, not Gloo's/NCCL's internals
        lost = distributed.peer_lost(exc, trainer.world_size, run_dir)
        if lost is None:
            raise
        raise lost from exc

    best_path = Path(best.best_model_path) if best is not None and best.best_model_path else None
    if best_path is None or not best_path.is_file():
        best_path = rundir.checkpoint_path(run_dir, rundir.LAST)
    if trainer.is_global_zero:
        _export_best(module, best_path, rundir.model_dir(run_dir), recipe, classmap)
    distributed.barrier()  # model/ exists before any process evaluates it

    rows = tuple(history.rows)
    flat = flat_loss_warning(list(rows)) if trainer.is_global_zero else None
    if flat:
        log.warning("%s", flat)
    summary = {
        "warnings": [flat] if flat else [],
        "train_time_s": clock.total_s(),
        "epochs": int(trainer.current_epoch),
        "best_checkpoint": str(best_path),
        BEST_VAL_MIOU: _score(best.best_model_score) if best is not None else None,
        "planned_epochs": clock.planned_epochs,
    }
    if plan.evaluate_split is None:
        return FitResult(run_dir, summary, rows, plan)
    scores = score(
        rundir.model_dir(run_dir),
        source,
        plan.evaluate_split,
        out_dir=run_dir,
        batch_size=recipe.data.eval_batch_size,
        num_workers=recipe.data.num_workers,
        precision=recipe.trainer.precision,
        device=plan.device,
        extra=summary,
    )
    if trainer.is_global_zero:  # the model card again, now with the test metrics
        model_card.write_model_card(rundir.model_dir(run_dir), run_dir=run_dir)
    return FitResult(run_dir, scores.document, rows, plan, confusion=scores.confusion,
                     per_image=scores.per_image)


def _start_lines(recipe: Recipe, run_dir: Path, source: Any) -> list[str]:
    """The run folder, the split sizes and the epoch plan, printed as training starts."""
    data = recipe.data
    sizes = ", ".join(f"{split} {len(source.splits.get(split) or [])}"
                      for split in dict.fromkeys((data.train_split, data.val_split,
                                                  data.test_split)) if split)
    cfg = recipe.trainer
    plan = f"{cfg.max_epochs} epoch{'s' if cfg.max_epochs != 1 else ''}"
    if cfg.max_minutes:
        plan = (f"a {cfg.max_minutes:g}-minute budget (at most {cfg.max_epochs} epochs; the "
                "epochs that fit are re-estimated after each one)")
    return [f"run folder: {run_dir}; images: {sizes}; training for {plan}"]


def _fit_stoppable(trainer: Any, module: Any, datamodule: Any, ckpt_path: Path | None,
                   run_dir: Path) -> None:
    """``trainer.fit`` under :func:`seglab.stops.catch_stops`: SIGINT/SIGTERM end it with
    :class:`seglab.stops.Stopped` after a checkpoint (``engine.stopping``), never with
    Lightning's exit code 0 (SIGTERM) or 1 (Ctrl-C)."""

    def where() -> str:
        return stop_message(run_dir, int(trainer.current_epoch) + 1, int(trainer.global_step))

    try:
        with stops.catch_stops(defer=True):
            trainer.fit(
                module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
                weights_only=True,
            )  # fmt: skip
    except SIGTERMException:  # Lightning's own handler (several processes): its last checkpoint
        stops.clear_pending()
        raise stops.Stopped(signal.SIGTERM, where()) from None
    except stops.Stopped as exc:
        stops.clear_pending()
        if exc.message.startswith("stopped at epoch"):
            raise
        raise stops.Stopped(exc.signum, f"{where()} (from its last checkpoint)") from None
    signum = stops.pending()
    if signum is not None:  # the signal came during the last epoch's end: trained, not scored
        stops.clear_pending()
        raise stops.Stopped(signum, where().replace("stopped at", "stopped after training, at")
                            + " (it scores the test split)")


def _score(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _export_best(
    module: Any, checkpoint: Path, directory: Path, recipe: Recipe, classmap: Any
) -> None:
    """Load the best checkpoint's weights (weights_only) and save them as ``model/``."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    model = module.model.to("cpu")
    model.load_state_dict(weights)
    model.to(memory_format=torch.contiguous_format)
    saved = recipe.to_dict()
    save_pretrained(
        model,
        directory,
        classmap=classmap,
        mean=recipe.data.mean or None,
        std=recipe.data.std or None,
        extra={"inference": recipe_inference(saved), "recipe": saved,
               "checkpoint": checkpoint.name},
    )
