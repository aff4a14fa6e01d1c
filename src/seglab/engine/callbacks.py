"""Training callbacks: a clock with an optional time budget, and the per-epoch history CSV."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import lightning as L

# The history file's layout belongs to the run folder; both names stay importable from here.
from seglab.artifacts.rundir import HISTORY_COLUMNS, read_history
from seglab.io_utils import atomic_write_text

__all__ = ["HISTORY_COLUMNS", "HistoryCSV", "TrainingClock", "read_history"]


class TrainingClock(L.Callback):
    """Wall time spent training (train + validation), kept across ``--resume``.

    With ``budget_s`` set, after every epoch the number of epochs that fit in the budget is
    re-estimated from the recent epoch times; the learning-rate schedule is stretched or shrunk
    to end with that epoch (so poly/cosine reach their floor when time runs out), and training
    stops there. ``max_epochs`` still caps it.
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
        fit = max(done, math.floor(self.budget_s / per_epoch)) if per_epoch > 0 else done
        if self.max_epochs is not None:
            fit = min(fit, self.max_epochs)
        self.planned_epochs = fit
        self._apply_plan(pl_module, fit)
        if done >= fit or self.total_s() + per_epoch > self.budget_s * 1.05:
            trainer.should_stop = True

    @staticmethod
    def _apply_plan(pl_module: L.LightningModule, epochs: int) -> None:
        schedule = getattr(pl_module, "schedule", None)
        if schedule is not None:
            schedule.total_steps = max(1, epochs * schedule.steps_per_epoch)


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
            "val_loss": val.get("val_loss", math.nan),
            "val_miou": val.get("val_miou", math.nan),
            "val_pixel_acc": val.get("val_pixel_acc", math.nan),
            "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan,
            "time_s": self.clock.total_s(),
            **extra,
        }
        pl_module.last_val = {}
        rows = [r for r in read_history(self.path) if int(r["epoch"]) < row["epoch"]]
        rows.append(row)
        buffer = io.StringIO()
        columns = (*HISTORY_COLUMNS, *extra)
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _fmt(r.get(k, math.nan)) for k in columns})
        atomic_write_text(self.path, buffer.getvalue())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        # 10 digits: the logged losses, fed back to the adaptive rule, reproduce its weights.
        return "" if math.isnan(value) else f"{value:.10g}"
    return str(value)
