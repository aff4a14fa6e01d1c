"""A training run stopped by SIGINT/SIGTERM: checkpoint at a step boundary, then one line.

:func:`seglab.stops.catch_stops` (``defer=True``) records the signal; :class:`StopOnSignal`
acts on it where a checkpoint resumes exactly: after a training step (not an epoch's last
one, whose validation and epoch-end checkpoint follow) or at the start of the next epoch
(``last.ckpt`` of the one before is on disk). It then raises :class:`seglab.stops.Stopped`
whose message says where the run stopped and how to resume it.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L

from seglab import stops


def stop_message(run_dir: Path, epoch: int, step: int) -> str:
    """``stopped at epoch N, step S; resume with: ...`` (``epoch`` 1-based)."""
    return (f"stopped at epoch {epoch}, step {step}; resume with: "
            f"seglab train --resume --run-dir {run_dir}")


class StopOnSignal(L.Callback):
    """Save ``last_path`` and raise :class:`~seglab.stops.Stopped` once a stop is pending."""

    def __init__(self, run_dir: Path, last_path: Path) -> None:
        self.run_dir = Path(run_dir)
        self.last_path = Path(last_path)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's own SIGTERM handler ends fit() with exit code 0 at its next check; one
        # process keeps seglab's (several processes keep Lightning's, which tells every rank).
        if trainer.world_size == 1:
            stops.install_handler(signal.SIGTERM)

    def _stop(self, trainer: L.Trainer, epoch: int, save: bool) -> None:
        signum = stops.pending()
        if signum is None:
            return
        if save:
            trainer.save_checkpoint(self.last_path)
        stops.clear_pending()
        raise stops.Stopped(signum, stop_message(self.run_dir, epoch, trainer.global_step))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # validation and the epoch-end checkpoint come next
        self._stop(trainer, trainer.current_epoch + 1, save=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer, trainer.current_epoch, save=False)
