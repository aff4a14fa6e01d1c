"""The Lightning callback that reports each epoch's validation score to the Optuna trial.

After every validated epoch it reports the objective (``val_miou``, ``val_loss`` or
``val_pixel_acc``) as the trial's intermediate value at step = epoch and tells the study's
progress callback. When the pruner says the trial is behind, ``optuna.TrialPruned`` is raised
as the next epoch starts: by then the epoch's history row and checkpoints are written (they
save at the end of the epoch, after this callback), so a pruned trial's folder holds its
history, ``checkpoints/best.ckpt`` and ``last.ckpt``. A trial found behind after its last
epoch has nothing left to save and finishes normally.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import optuna

from seglab.metrics import VAL_MIOU


class TrialReporter(L.Callback):
    """Report ``metric`` per epoch to ``trial``; prune when ``prune`` and the pruner agrees.

    ``on_epoch(epoch, value)`` is called after every report (progress output). With several
    objectives Optuna takes no intermediate values: set ``report=False`` to only call
    ``on_epoch``.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        metric: str = VAL_MIOU,
        *,
        prune: bool = True,
        report: bool = True,
        on_epoch: Callable[[int, float | None], None] | None = None,
    ) -> None:
        self.trial = trial
        self.metric = metric
        self.prune = prune and report
        self.report = report
        self.on_epoch = on_epoch
        self._value: float | None = None
        self._pruned: str | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        self._value = float(value) if value is not None else None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value, self._value = self._value, None
        epoch = trainer.current_epoch + 1
        if value is not None and not math.isfinite(value):
            value = None
        if value is not None and self.report:
            self.trial.report(value, step=epoch)
        if self.on_epoch is not None:
            self.on_epoch(epoch, value)
        if value is not None and self.prune and self.trial.should_prune():
            self._pruned = f"pruned after epoch {epoch} ({self.metric} {value:.4f})"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pruned is not None:
            raise optuna.TrialPruned(self._pruned)
