"""Training callbacks and checkpoint I/O: a clock with an optional time budget, the per-epoch
history CSV, the resume state (RNGs and the position in the epoch), and checkpoints written
atomically beside their target.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

# The history file's layout belongs to the run folder; both names stay importable from here.
from seglab.artifacts.rundir import HISTORY_COLUMNS, history_cell, read_checkpoint, read_history
from seglab.errors import SeglabError
from seglab.io_utils import atomic_path, atomic_write_text
from seglab.metrics import VAL_LOSS, VAL_MIOU, VAL_PIXEL_ACC

__all__ = [
    "HISTORY_COLUMNS",
    "AtomicCheckpointIO",
    "HistoryCSV",
    "ResumeState",
    "StepCheckpoint",
    "TrainingClock",
    "read_history",
]

_os_write = os.write  # one name for the tests' full-disk fault
_CHUNK = 8 << 20


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a half-written or missing checkpoint.

    Lightning's own writer stages the file under the system temp folder and moves it; across
    filesystems that move is a copy, so a kill or a full disk truncates the checkpoint. Here
    the bytes go to a temporary file in the target's folder, are flushed (``fsync``) and
    renamed over the target: the previous checkpoint stays whole until the new one is
    complete, and the temporary is removed on every exit path (a SIGKILL's is removed at the
    next write or start). Loading is ``torch.load(weights_only=True)``, whatever the caller
    asks: a checkpoint holding pickled objects is refused with the file's name.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        target = Path(path)
        try:
            with atomic_path(target, fsync=True) as tmp:
                fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
                try:
                    view = buffer.getbuffer()
                    for start in range(0, len(view), _CHUNK):
                        chunk = view[start : start + _CHUNK]
                        while chunk:
                            chunk = chunk[_os_write(fd, chunk) :]
                finally:
                    os.close(fd)
        except OSError as exc:
            raise SeglabError(
                f"cannot write checkpoint {target}: {exc.strerror or exc}; the previous "
                "checkpoint (if any) is kept"
            ) from exc

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(path)


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every N training steps, except on an epoch's last batch: the epoch-end
    checkpoint follows right after it (and Lightning, resumed from a checkpoint taken on the
    last batch, would skip that epoch's validation and epoch-end hooks)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def capture_rng() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python RNG states as checkpoint-safe plain data."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},  # fmt: skip
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the RNGs to what :func:`capture_rng` recorded."""
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))  # fmt: skip
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(L.Callback):
    """What a deterministic run needs to resume bit for bit: the RNG states at the moment a
    checkpoint is taken, and the position in the epoch (epoch, batches trained).

    Loaded from a checkpoint, it tells ``datamodule`` (a ``SegDataModule``) where the train
    loader starts, and puts the RNGs back when training starts, after every set-up step that
    draws from them (model construction) has run.
    """

    def __init__(self, datamodule: Any = None) -> None:
        self.datamodule = datamodule
        self.epoch = 0
        self.batches = 0
        self._rng: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ResumeState"

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "rng": capture_rng()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = int(state_dict.get("epoch", 0))
        self.batches = int(state_dict.get("batches", 0))
        self._rng = state_dict.get("rng")
        if self.datamodule is not None and hasattr(self.datamodule, "resume_at"):
            self.datamodule.resume_at(self.epoch, self.batches)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng is not None:
            restore_rng(self._rng)
            self._rng = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch, self.batches = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        self.epoch, self.batches = trainer.current_epoch, batch_idx + 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Checkpoints taken from here on resume at the start of the next epoch.
        self.epoch, self.batches = trainer.current_epoch + 1, 0


class TrainingClock(L.Callback):
    """Wall time spent training (train + validation), kept across ``--resume``.

    With ``budget_s`` set, after every epoch the number of epochs that fit in the budget is
    re-estimated: those done plus those the time left holds at the pace of the last three.
    The learning-rate schedule is stretched or shrunk to end with that epoch (so poly/cosine
    reach their floor when time runs out), and training stops there. ``max_epochs`` still
    caps it.
    """

    def __init__(self, budget_s: float | None = None, max_epochs: int | None = None) -> None:
        self.budget_s = budget_s
        self.max_epochs = max_epochs
        self.elapsed_s = 0.0
        self.epoch_times: list[float] = []
        self.planned_epochs: int | None = None
        self._started: float | None = None
        self._epoch_started: float | None = None

    @property
    def state_key(self) -> str:
        return "TrainingClock"

    def state_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": self.total_s(),
            "epoch_times": list(self.epoch_times),
            "planned_epochs": self.planned_epochs,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed_s = float(state_dict.get("elapsed_s", 0.0))
        self.epoch_times = [float(t) for t in state_dict.get("epoch_times", [])]
        self.planned_epochs = state_dict.get("planned_epochs")

    def total_s(self) -> float:
        """Seconds trained so far, including earlier (resumed) sessions."""
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return self.elapsed_s + running

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()
        if self.planned_epochs is not None:
            self._apply_plan(pl_module, self.planned_epochs)
            if self.budget_s is not None:
                self._show_plan(trainer, self.planned_epochs)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.elapsed_s = self.total_s()
        self._started = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_started is not None:
            self.epoch_times.append(time.monotonic() - self._epoch_started)
        if self.budget_s is None or not self.epoch_times:
            return
        done = trainer.current_epoch + 1
        recent = self.epoch_times[-3:]
        per_epoch = sum(recent) / len(recent)
        # the epochs done plus those the time left holds at the recent pace (not the budget
        # over that pace: on a shared machine whose epochs slowed by a third mid-run, that
        # left a minute of a 9-minute budget unused)
        left = self.budget_s - self.total_s()
        fit = done + max(0, math.floor(left / per_epoch)) if per_epoch > 0 else done
        if self.max_epochs is not None:
            fit = min(fit, self.max_epochs)
        self.planned_epochs = fit
        self._apply_plan(pl_module, fit)
        self._show_plan(trainer, fit)
        if done >= fit or self.total_s() + per_epoch > self.budget_s * 1.05:
            trainer.should_stop = True

    @staticmethod
    def _show_plan(trainer: L.Trainer, epochs: int) -> None:
        """The planned epochs become the loop's limit: the progress bar's and epoch lines'
        total ("Epoch 14/25", not "/199")."""
        loop = getattr(trainer, "fit_loop", None)
        if loop is not None:
            loop.max_epochs = epochs

    @staticmethod
    def _apply_plan(pl_module: L.LightningModule, epochs: int) -> None:
        schedule = getattr(pl_module, "schedule", None)
        if schedule is not None:
            total = max(1, epochs * schedule.steps_per_epoch)
            refit = getattr(schedule, "refit", None)
            if refit is not None:
                refit(total)  # poly/cosine: only down from here, annealed at the new end
            else:
                schedule.total_steps = total


class HistoryCSV(L.Callback):
    """Append one row per epoch to the run's history file (columns :data:`HISTORY_COLUMNS`,
    then ``loss_<name>`` and ``w_<name>`` for a two-loss recipe: see the module's
    ``close_train_epoch``).

    ``time_s`` is the cumulative training time at the end of the epoch (from the clock), so
    accuracy can be plotted against time. Rewriting an epoch (after ``--resume``) replaces its
    row instead of duplicating it.
    """

    def __init__(self, path: str | Path, clock: TrainingClock) -> None:
        self.path = Path(path)
        self.clock = clock
        self.rows: list[dict[str, Any]] = []  # the file's rows, as read_history reads them

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run continues the rows of its earlier epochs.
        self.rows = read_history(self.path) if trainer.is_global_zero else []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric = pl_module.train_loss
        train_loss = float(metric.compute()) if metric.update_count else math.nan
        metric.reset()
        # A two-loss recipe adds loss_<name> and w_<name> (computed on every process).
        close = getattr(pl_module, "close_train_epoch", None)
        extra = close() if close is not None else {}
        if not trainer.is_global_zero:
            return
        val = getattr(pl_module, "last_val", {}) or {}
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": train_loss,
            VAL_LOSS: val.get(VAL_LOSS, math.nan),
            VAL_MIOU: val.get(VAL_MIOU, math.nan),
            VAL_PIXEL_ACC: val.get(VAL_PIXEL_ACC, math.nan),
            "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan,
            "time_s": self.clock.total_s(),
            **extra,
        }
        pl_module.last_val = {}
        rows = [r for r in self.rows if int(r["epoch"]) < row["epoch"]]
        rows.append(row)
        buffer = io.StringIO()
        columns = (*HISTORY_COLUMNS, *extra)
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        written = []
        for r in rows:
            cells = {k: _fmt(r.get(k, math.nan)) for k in columns}
            writer.writerow(cells)
            written.append({k: int(v) if k == "epoch" else history_cell(v)
                            for k, v in cells.items()})
        atomic_write_text(self.path, buffer.getvalue())
        self.rows = written


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        # 10 digits: the logged losses, fed back to the adaptive rule, reproduce its weights.
        return "" if math.isnan(value) else f"{value:.10g}"
    return str(value)
