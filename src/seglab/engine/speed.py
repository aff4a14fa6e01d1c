"""Training defaults that fit the data and the machine: a crop no larger than the images, and
an early speed report (images/s and the estimated epoch time) after the first batches.

A random crop larger than the images pads every image to the crop (the padding is ignored by
the loss but still computed), so a 512x512 crop of 96x128 images costs 21x the pixels per
step for nothing. ``crop_for_images`` caps the crop at the training images' size and warns
with that cost.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import lightning as L
import torch

from seglab.data.dataset import image_size

# Image headers read to find the training images' size (evenly spaced over the split).
SIZE_SAMPLE = 64


def training_image_size(pairs: Sequence[tuple[Any, Any]],
                        sample: int = SIZE_SAMPLE) -> tuple[int, int] | None:
    """Largest height and largest width among (a sample of) the split's images; None if empty.

    Reads only file headers, so even the full sample takes milliseconds.
    """
    if not pairs:
        return None
    step = max(1, len(pairs) // sample)
    sizes = [image_size(Path(pairs[i][0])) for i in range(0, len(pairs), step)][:sample]
    return max(h for h, _ in sizes), max(w for _, w in sizes)


def crop_for_images(crop_size: Sequence[int] | None, resize: Sequence[int] | None,
                    pairs: Sequence[tuple[Any, Any]]) -> tuple[int, int] | None:
    """``crop_size`` capped, side by side, at the size the images have before the random scale
    (``resize`` when set, else the largest training image); warns when it caps.

    ``None`` (no crop) and an empty split are returned unchanged.
    """
    if crop_size is None:
        return None
    crop = (int(crop_size[0]), int(crop_size[1]))
    images = tuple(int(v) for v in resize) if resize is not None else training_image_size(pairs)
    if images is None:
        return crop
    fitted = (min(crop[0], images[0]), min(crop[1], images[1]))
    if fitted != crop:
        cost = crop[0] * crop[1] / (fitted[0] * fitted[1])
        origin = "augment.resize" if resize is not None else "the largest training image"
        warnings.warn(
            f"augment.crop_size {crop[0]}x{crop[1]} is larger than the training images "
            f"({images[0]}x{images[1]}, {origin}): training crops {fitted[0]}x{fitted[1]} "
            f"instead. The larger crop would pad every image and cost {cost:.1f}x the pixels "
            "per step; set augment.crop_size to at most the image size to silence this.",
            UserWarning, stacklevel=2,
        )
    return fitted


def describe_weights(spec: dict[str, Any]) -> str:
    """Where a built model's initial weights came from, in words, from its ``seglab_spec``."""
    from seglab.models.registry import WEIGHT_OPTIONS

    options = spec.get("options", {})
    given = [f"{key}={options[key]}" for key in WEIGHT_OPTIONS if options.get(key)]
    name = spec.get("name", "?")
    if not given:
        return f"weights: none for {name} (random initialisation: training from scratch)"
    return f"weights: {name} starts from " + ", ".join(given)


class SpeedReport(L.Callback):
    """Says at the start which weights the model starts from, then, early in the first epoch,
    how fast training runs and how long an epoch will take.

    Batches ``1..warmup`` are left out (worker start-up, kernel selection); the next
    ``batches`` are timed. The report goes through the progress bar when there is one (so it
    does not break the bar), else to ``stream``. ``images_per_s`` and ``epoch_s`` keep the
    figures for callers.
    """

    def __init__(self, warmup: int = 1, batches: int = 5, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 notes: Sequence[str] = (), resumed: bool = False) -> None:
        if warmup < 0 or batches < 1:
            raise ValueError(f"SpeedReport needs warmup >= 0 and batches >= 1, got "
                             f"{warmup}, {batches}")
        self.warmup, self.batches = warmup, batches
        self.stream = stream
        self.clock = clock
        self.notes = list(notes)  # printed at the start, after the weights line
        self.resumed = resumed  # the weights come from the run's checkpoint, not the spec
        self.images_per_s: float | None = None
        self.epoch_s: float | None = None
        self._start: float | None = None
        self._images = 0
        self._seen = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        spec = getattr(getattr(pl_module, "model", None), "seglab_spec", None)
        if not trainer.is_global_zero:
            return
        if self.resumed:
            self._print(trainer, "weights: the run's own checkpoint (resumed)")
        elif spec is not None:
            self._print(trainer, describe_weights(spec))
        for note in self.notes:
            self._print(trainer, note)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._images, self._seen = None, 0, 0
        if self.warmup == 0:
            self._start = self._now(pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.images_per_s is not None:
            return
        self._seen += 1
        if self._seen == self.warmup:
            self._start = self._now(pl_module)
            return
        if self._start is None:
            return
        self._images += _batch_size(batch)
        timed = self._seen - self.warmup
        if timed < self.batches and self._seen < trainer.num_training_batches:
            return
        seconds = self._now(pl_module) - self._start
        self.images_per_s = self._images / seconds if seconds > 0 else float("inf")
        per_batch = seconds / timed
        total = trainer.num_training_batches
        self.epoch_s = per_batch * total if total != float("inf") else None
        self._report(trainer, per_batch, total)

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return self.clock()

    def _report(self, trainer: L.Trainer, per_batch: float, total: float) -> None:
        epoch = (f"one epoch ({int(total)} batches) about {_duration(self.epoch_s)} of training"
                 if self.epoch_s is not None else "epoch length unknown")
        message = (f"speed: {self.images_per_s:.1f} images/s ({per_batch:.2f} s/batch over "
                   f"{self._seen - self.warmup} batches, {torch.get_num_threads()} CPU threads); "
                   f"{epoch}")
        self._print(trainer, message)

    def _print(self, trainer: L.Trainer, message: str) -> None:
        bar = trainer.progress_bar_callback
        if bar is not None and self.stream is None:
            bar.print(message)
        else:
            print(message, file=self.stream or sys.stderr, flush=True)


def _batch_size(batch: Any) -> int:
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(images.shape[0])


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"
