"""Train a recipe into a run folder: Lightning loop, checkpoints, history, final evaluation.

``train_one(recipe, run_dir)`` (which :func:`seglab.engine.fit` calls) writes ``runs/<name>/``:
``recipe.yaml`` (resolved), ``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt`` (``last``
also every ``trainer.checkpoint_every_n_steps`` steps, so a killed run loses little),
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

import torch

from seglab.artifacts import model_card, rundir
from seglab.config import Recipe
from seglab.engine import distributed
from seglab.engine.trainer_setup import build_trainer, quiet_lightning
from seglab.errors import ConfigError
from seglab.metrics import BEST_VAL_MIOU, VAL_MIOU

log = logging.getLogger(__name__)


def _class_weights(recipe: Recipe, source: Any) -> list[float] | None:
    """Loss class weights from the training split's pixel statistics (None when unweighted):
    the same ``class_weights`` on the same ``PixelStats`` as ``seglab data inspect``."""
    strategy = recipe.loss.class_weights
    if not strategy or strategy == "none":
        return None
    from seglab.data.stats import class_weights, compute_pixel_stats

    stats = compute_pixel_stats(source.dataset(recipe.data.train_split))
    weights = class_weights(
        stats, strategy, names=source.classmap.names, **recipe.loss.class_weight_params
    )
    return [float(w) for w in weights]


def _train_crop(recipe: Recipe, source: Any) -> tuple[int, int] | None:
    """The training crop: the recipe's, capped at the training images' size (with a warning)."""
    from seglab.engine.speed import crop_for_images

    pairs = source.splits.get(recipe.data.train_split, [])
    return crop_for_images(recipe.augment.crop_size, recipe.augment.resize, pairs)


def _datamodule(recipe: Recipe, source: Any, crop: tuple[int, int] | None) -> Any:
    """The data layer's ``SegDataModule`` with the recipe's training augmentation at ``crop``
    (:func:`_train_crop`)."""
    from seglab.data.transforms import train_transform

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
    from seglab.data.datamodule import SegDataModule

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


def _callbacks(recipe: Recipe, run_dir: Path, has_val: bool,
               notes: Sequence[str] = (), resumed: bool = False) -> tuple[list[Any], Any, Any]:
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from seglab.engine.callbacks import HistoryCSV, StepCheckpoint, TrainingClock
    from seglab.engine.speed import SpeedReport

    trainer_cfg = recipe.trainer
    ckpt_dir = rundir.checkpoint_dir(run_dir)
    budget = trainer_cfg.max_minutes * 60 if trainer_cfg.max_minutes else None
    clock = TrainingClock(budget_s=budget, max_epochs=trainer_cfg.max_epochs)
    callbacks: list[L.Callback] = [clock, HistoryCSV(rundir.history_path(run_dir), clock)]
    if trainer_cfg.progress:  # images/s and the epoch estimate, early in the first epoch
        callbacks.append(SpeedReport(notes=notes, resumed=resumed))
    best = None
    if has_val:
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
    return callbacks, clock, best


def _check_run_dir(run_dir: Path, resume: bool) -> Path | None:
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


def _read_resume_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint ``--resume`` continues from, read as plain data (weights_only): a
    pickle payload or a file that is no training checkpoint is a clear error naming it."""
    from seglab.errors import ModelError

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
) -> dict[str, Any]:
    """Train once into ``run_dir`` and evaluate; returns the metrics document.

    ``source`` replaces the recipe's dataset (k-fold passes one ``DataSource`` per fold);
    ``evaluate_split`` is the split scored at the end (``auto``: test, else val; None: none);
    ``callbacks`` are extra Lightning callbacks, run after seglab's own (a study's pruner).

    The folder is locked for the whole call (a second process gets a clear error), and every
    check (model, freeze policy, precision, data, the resumed checkpoint) runs before anything
    is written to it.
    """
    import contextlib

    from seglab.artifacts.lock import folder_lock

    run_dir = Path(run_dir)
    # Lightning's DDP launcher re-runs the command in each extra process: rank 0 alone checks,
    # locks and writes the run folder (the others find it already started).
    zero = distributed.is_rank_zero()
    lock = folder_lock(run_dir, "seglab train") if zero else contextlib.nullcontext()
    with lock:
        return _train_locked(recipe, run_dir, zero, resume, source, evaluate_split, callbacks)


def _train_locked(
    recipe: Recipe,
    run_dir: Path,
    zero: bool,
    resume: bool,
    source: Any,
    evaluate_split: str | None,
    callbacks: Sequence[Any],
) -> dict[str, Any]:
    import lightning as L

    from seglab.allocator import keep_freed_memory
    from seglab.data.formats import open_source
    from seglab.engine.callbacks import AtomicCheckpointIO, ResumeState
    from seglab.engine.module import SegmentationModule
    from seglab.engine.run_start import RunStart, parameters_line, save_class_weights
    from seglab.engine.stopping import StopOnSignal
    from seglab.io_utils import clean_stale_temps

    quiet_lightning()
    keep_freed_memory()  # each step reuses the last one's pages (seglab.allocator)
    ckpt_path = _check_run_dir(run_dir, resume) if zero or resume else None
    if zero:  # temporaries of a save that was killed (SIGKILL leaves no chance to clean)
        for which in (rundir.LAST, rundir.BEST):
            clean_stale_temps(rundir.checkpoint_path(run_dir, which))
    L.seed_everything(recipe.trainer.seed, workers=True, verbose=False)
    if source is None:
        source = open_source(recipe.data.spec, **recipe.data.options)
    source.join_splits(recipe.data.train_split)  # "train+val"
    classmap = source.classmap
    crop = _train_crop(recipe, source)
    datamodule = _datamodule(recipe, source, crop)
    has_val = bool(recipe.data.val_split and source.splits.get(recipe.data.val_split))
    weights = _class_weights(recipe, source)
    module = SegmentationModule(recipe.to_dict(), classmap.to_dict(), class_weights=weights)
    recipe, notes = _resolve_auto_precision(recipe, module.model, crop, run_dir, resume)
    wired, clock, best = _callbacks(recipe, run_dir, has_val, notes, ckpt_path is not None)
    resume_state = ResumeState(datamodule)
    stopper = StopOnSignal(run_dir, rundir.checkpoint_path(run_dir, rundir.LAST))
    announce = RunStart([*_start_lines(recipe, run_dir, source), parameters_line(module.model)],
                        rundir.history_path(run_dir),
                        resumed=ckpt_path is not None)
    trainer = build_trainer(
        recipe, run_dir, [resume_state, stopper, *wired, announce, *callbacks], has_val,
        plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    datamodule.check_train_split(trainer.world_size)
    if ckpt_path is not None:  # edits the checkpoint would silently override are refused
        from seglab.engine.resume_rule import check_resume_edits

        check_resume_edits(_read_resume_checkpoint(ckpt_path), recipe.to_dict(),
                           classmap.to_dict(), ckpt_path)
    if zero:  # everything checked: only now does the folder receive files
        _write_recipe(recipe, run_dir)
        announce.lines += save_class_weights(run_dir, classmap.names, weights,
                                             str(recipe.loss.class_weights))
        if ckpt_path is None:
            rundir.history_path(run_dir).unlink(missing_ok=True)  # a failed start's rows
    try:
        _fit_stoppable(trainer, module, datamodule, ckpt_path, run_dir)
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

    from seglab.engine.health import flat_loss_warning

    flat = flat_loss_warning(rundir.read_history(run_dir)) if trainer.is_global_zero else None
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
    split = _evaluation_split(recipe, source, evaluate_split)
    if split is None:
        return summary
    from seglab.engine.evaluation import evaluate

    doc = evaluate(
        rundir.model_dir(run_dir),
        source,
        split,
        out_dir=run_dir,
        batch_size=recipe.data.eval_batch_size,
        num_workers=recipe.data.num_workers,
        precision=recipe.trainer.precision,
        device=distributed.accelerator_device(recipe.trainer.accelerator),
        extra=summary,
    )
    if trainer.is_global_zero:  # the model card again, now with the test metrics
        model_card.write_model_card(rundir.model_dir(run_dir), run_dir=run_dir)
    return doc


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
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from seglab import stops
    from seglab.engine.stopping import stop_message

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


def _resolve_auto_precision(
    recipe: Recipe, model: Any, crop: Any, run_dir: Path, resume: bool
) -> tuple[Recipe, list[str]]:
    """``trainer.precision: auto`` on one CPU process: bf16 or fp32, whichever trains this
    model faster here at the training ``crop`` (``engine.precision_choice``); on resume, the
    run's recorded choice.

    A CPU without bf16 hardware trains in fp32 without a probe (emulated bf16 is several
    times slower). GPUs, several processes (every rank must agree) and runs without a fixed
    crop keep ``auto`` (bf16 autocast on a CPU with bf16 hardware, else fp32). Returns the
    recipe to train and record, and the line the start of training prints.
    """
    from seglab.artifacts.device import cpu_bf16_native
    from seglab.engine.precision_choice import NO_BF16_HARDWARE, choose_cpu_precision
    from seglab.engine.trainer_setup import process_count, trains_on_gpu

    cfg = recipe.trainer
    if (cfg.precision != "auto" or trains_on_gpu(cfg.accelerator) or crop is None
            or (process_count(cfg.devices, cfg.num_nodes) or 1) > 1):
        return recipe, []
    stored = None
    if resume and rundir.recipe_path(run_dir).is_file():
        stored = rundir.read_recipe(run_dir).get("trainer", {}).get("precision")
    if stored in ("bf16", "fp32"):
        chosen, note = stored, f"precision: {stored} (auto, as chosen when the run started)"
    elif not cpu_bf16_native():
        chosen, note = "fp32", f"precision: fp32 (auto: {NO_BF16_HARDWARE})"
    else:
        bands = len(recipe.data.mean) if recipe.data.mean else 3
        choice = choose_cpu_precision(model, tuple(crop), bands, cfg.channels_last,
                                      batch=recipe.data.batch_size)
        chosen, note = choice.precision, choice.describe()
    data = recipe.to_dict()
    data["trainer"]["precision"] = chosen
    return Recipe.from_dict(data), [note]


def _score(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _evaluation_split(recipe: Recipe, source: Any, requested: str | None) -> str | None:
    if requested is None:
        return None
    if requested != "auto":
        return requested
    for split in (recipe.data.test_split, recipe.data.val_split):
        if split and source.splits.get(split):
            return split
    return None


def _export_best(
    module: Any, checkpoint: Path, directory: Path, recipe: Recipe, classmap: Any
) -> None:
    """Load the best checkpoint's weights (weights_only) and save them as ``model/``."""
    from seglab.artifacts.pretrained import save_pretrained

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    model = module.model.to("cpu")
    model.load_state_dict(weights)
    model.to(memory_format=torch.contiguous_format)
    inference = {
        "size": list(recipe.augment.eval_resize) if recipe.augment.eval_resize else None,
        "mode": recipe.eval.mode,
        "crop": list(recipe.eval.crop) if recipe.eval.crop else None,
        "stride": list(recipe.eval.stride) if recipe.eval.stride else None,
        "scales": list(recipe.eval.scales),
        "flip": recipe.eval.flip,
    }
    save_pretrained(
        model,
        directory,
        classmap=classmap,
        mean=recipe.data.mean or None,
        std=recipe.data.std or None,
        extra={"inference": inference, "recipe": recipe.to_dict(), "checkpoint": checkpoint.name},
    )
