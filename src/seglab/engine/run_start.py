"""What a training run says before and while it runs, in plain lines.

At the start: the run folder and split sizes, "resuming from epoch N" on resume, the class
weights used (saved as ``class_weights.json`` in the run folder) with a warning when the largest
is more than :data:`WEIGHT_RATIO_WARNING` times the smallest, and a warning when the warm-up
does not fit in the run. During it, when stdout is not a terminal (a log file, a batch job),
one line per epoch, so a redirected run is never silent for the length of an epoch.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from seglab.artifacts.rundir import read_history
from seglab.io_utils import atomic_write_text
from seglab.metrics import VAL_MIOU
from seglab.units import is_fraction_metric

CLASS_WEIGHTS_FILE = "class_weights.json"
# Largest over smallest non-zero weight beyond which a weighting usually trains the rare classes
# at the cost of everything else (median frequency on CamVid's 32 classes reaches 180,000).
WEIGHT_RATIO_WARNING = 100.0
# Warm-up longer than this share of the run leaves little of it at the schedule's full rate.
WARMUP_SHARE_WARNING = 0.5


def save_class_weights(run_dir: Path, names: Sequence[str], weights: Sequence[float] | None,
                       strategy: str) -> list[str]:
    """Write ``class_weights.json`` (None: unweighted, nothing written) and return the lines
    the start of the run prints about them."""
    if weights is None:
        return []
    table = {str(name): float(w) for name, w in zip(names, weights, strict=True)}
    atomic_write_text(Path(run_dir) / CLASS_WEIGHTS_FILE,
                      json.dumps({"strategy": strategy, "weights": table}, indent=2) + "\n")
    positive = [w for w in table.values() if w > 0 and math.isfinite(w)]
    lines = [f"class weights ({strategy}): min {min(positive, default=0):.3g}, max "
             f"{max(positive, default=0):.3g}, saved in {Path(run_dir) / CLASS_WEIGHTS_FILE}"]
    if positive and max(positive) > WEIGHT_RATIO_WARNING * min(positive):
        rare = max(table, key=table.__getitem__)
        lines.append(f"warning: class weights span {max(positive) / min(positive):,.0f}:1 "
                     f"(over {WEIGHT_RATIO_WARNING:.0f}:1; largest: {rare!r}); the rarest "
                     "classes may dominate the loss: consider loss.class_weights=inverse_sqrt "
                     "or a cap")
    return lines


def schedule_warnings(warmup_iters: int, total_steps: int) -> list[str]:
    """A warning when ``warmup_iters`` takes most or all of a ``total_steps`` run."""
    if not warmup_iters or total_steps <= 0:
        return []
    if warmup_iters >= total_steps:
        return [f"warning: schedule.warmup_iters={warmup_iters} is longer than the run "
                f"({total_steps} steps): the learning rate never reaches optim.lr"]
    if warmup_iters > WARMUP_SHARE_WARNING * total_steps:
        return [f"warning: schedule.warmup_iters={warmup_iters} is "
                f"{warmup_iters / total_steps:.0%} of the run ({total_steps} steps): little of "
                "it trains at the full learning rate"]
    return []


def _say(message: str, stream: TextIO | None = None) -> None:
    print(message, file=stream or sys.stderr, flush=True)


class RunStart(L.Callback):
    """Print the start-of-run ``lines``, "resuming from epoch N" and the warm-up check once
    training is set up, and one line per epoch when stdout is not a terminal."""

    def __init__(self, lines: Sequence[str], history: Path, resumed: bool,
                 epoch_lines: bool | None = None) -> None:
        self.lines = list(lines)
        self.history = Path(history)
        self.resumed = resumed
        self.epoch_lines = (not stdout_is_terminal()) if epoch_lines is None else epoch_lines

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        lines = list(self.lines)
        if self.resumed:
            lines.insert(0, f"resuming from epoch {trainer.current_epoch + 1}, step "
                            f"{trainer.global_step} (checkpoints/last.ckpt)")
        schedule = getattr(pl_module, "schedule", None)
        if schedule is not None:
            warmup = getattr(getattr(schedule, "_cfg", None), "warmup_iters", 0) or 0
            lines += schedule_warnings(warmup, int(schedule.total_steps))
        for line in lines:
            _say(line)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.epoch_lines and trainer.is_global_zero):
            return
        rows = read_history(self.history)  # written by HistoryCSV just before
        if not rows:
            return
        _say(epoch_line(rows[-1], trainer.max_epochs), sys.stdout)


def epoch_line(row: dict[str, Any], planned: int | None) -> str:
    """``epoch 3/25: train loss 0.412, val mIoU 52.31%, lr 0.0081, 1.2 min``."""
    def number(key: str) -> float:
        try:
            return float(row.get(key, math.nan))
        except (TypeError, ValueError):
            return math.nan

    parts = [f"train loss {number('train_loss'):.4g}"]
    if math.isfinite(number(VAL_MIOU)):
        parts.append(f"val mIoU {100 * number(VAL_MIOU):.2f}%")
    parts += [f"lr {number('lr'):.3g}", f"{number('time_s') / 60:.1f} min"]
    total = f"/{planned}" if planned and planned > 0 else ""
    return f"epoch {row.get('epoch')}{total}: " + ", ".join(parts)


class EpochBar(RichProgressBar):
    """Lightning's rich bar, with epochs counted from 1 of the planned total ("Epoch 3/25";
    Lightning's own shows the 0-based index over max_epochs - 1: "Epoch 0/0" for one epoch)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        # Scores in percent, as everywhere a person reads them (seglab.units).
        metrics = super().get_metrics(trainer, pl_module)
        return {k: _percent(v) if is_fraction_metric(k) else v for k, v in metrics.items()}

    def _get_train_description(self, current_epoch: int) -> str:
        total = f"/{self.trainer.max_epochs}" if self.trainer.max_epochs else ""
        text = f"Epoch {current_epoch + 1}{total}"
        return f"{text:{len(self.validation_description)}}"


def _percent(value: Any) -> Any:
    try:
        return f"{100 * float(value):.2f}%"
    except (TypeError, ValueError):
        return value


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (else: plain epoch lines, no bar)."""
    return sys.stdout.isatty()


def parameters_line(model: Any) -> str:
    """``model: unet, 7.6 K parameters (7.6 K trainable)`` (instead of Lightning's summary,
    whose FLOPs column reads 0 on every model)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    name = (getattr(model, "seglab_spec", None) or {}).get("name", type(model).__name__)
    return f"model: {name}, {_count(total)} parameters ({_count(trainable)} trainable)"


def _count(n: int) -> str:
    for unit, size in (("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)
