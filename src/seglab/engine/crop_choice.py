"""``trainer.budget_epochs``: the training crop chosen from the speed measured at start.

A time budget (``trainer.max_minutes``) fits the schedule to the epochs that fit, so one recipe's
accuracy follows the machine's speed: the CamVid-11 time-to-accuracy recipe scored 50.8 test
mIoU in 73 epochs on an AVX-512 BF16 EPYC, 46.2 in 35 under AVX2 emulation and 40.1 in 20 on an
AVX2-only Zen 3 (benchmarks/RESULTS.md). With ``budget_epochs`` the run first times a few real
training steps (the run's loader, forward, loss, backward and optimiser step, on a copy of the
model) at the recipe's crop. When fewer than ``budget_epochs`` epochs would fit the budget, it
shrinks the crop by the missing share of pixels (sides in steps of :data:`CROP_STEP`, never
below ``augment.min_crop_size``) and times the smaller crop too, at most :data:`MAX_PROBES`
crops in all. The scale of the images is untouched, so evaluation sees what training saw; a
smaller crop only gives each step less context.

The timing runs under saved RNG states on a copy of the model: when the crop is kept, training
is the same as without the probe. Its seconds come out of the training budget, and the choice
is written into the run's ``recipe.yaml`` (``augment.crop_size``), so ``--resume`` continues with
the same crop without measuring again.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from seglab.config import Recipe
from seglab.data.classes import ClassMap
from seglab.data.datamodule import SegDataModule
from seglab.engine.data_setup import train_augmentation
from seglab.engine.module import SegmentationModule
from seglab.engine.schedules import build_optimizer

# Crop sides are multiples of this (the stride of the networks' deepest features, 1/16 or 1/32,
# divides the crop or nearly so).
CROP_STEP = 16
# Crops timed at most: the recipe's, a first guess, one correction.
MAX_PROBES = 3
# Batches timed per crop after the untimed ones (worker start-up, kernel selection).
PROBE_WARMUP = 2
PROBE_BATCHES = 8

Size = tuple[int, int]


@dataclass(frozen=True)
class CropChoice:
    """The crop kept or chosen, each crop timed with its images/s, and what the timing cost."""

    crop: Size
    timed: tuple[tuple[Size, float], ...]
    images: int  # training images per epoch
    budget_s: float
    target: int
    probe_s: float

    def epochs(self, images_per_s: float) -> float:
        """Epochs of ``images`` that fit the budget (less the probe) at ``images_per_s``."""
        return (self.budget_s - self.probe_s) * images_per_s / self.images

    def describe(self) -> str:
        """The start-of-training line: what was chosen and why."""
        timings = "; ".join(f"{_size(crop)} trains {speed:.1f} images/s here, "
                            f"~{self.epochs(speed):.0f} epochs" for crop, speed in self.timed)
        first, _ = self.timed[0]
        budget = f"the {self.budget_s / 60:g}-minute budget"
        probe = f"timing took {self.probe_s:.0f} s of the budget"
        if self.crop == first:
            return (f"crop: {_size(first)} kept for {budget} ({timings}; trainer.budget_epochs "
                    f"{self.target}; {probe})")
        last_speed = dict(self.timed)[self.crop]
        short = ("" if self.epochs(last_speed) >= self.target else
                 ", still short of it at augment.min_crop_size")
        return (f"crop: {_size(self.crop)} instead of {_size(first)} so that "
                f"trainer.budget_epochs={self.target} epochs fit {budget}{short} ({timings}; "
                f"{probe})")


def _size(crop: Size) -> str:
    return f"{crop[0]}x{crop[1]}"


def smaller_crop(crop: Size, share: float, smallest: Size) -> Size:
    """``crop`` with its area scaled by ``share`` (< 1), sides rounded down to
    :data:`CROP_STEP` and at least one step smaller than ``crop``, never below ``smallest``."""
    side = math.sqrt(max(share, 0.0))

    def one(length: int, low: int) -> int:
        wanted = int(length * side) // CROP_STEP * CROP_STEP
        return max(low, min(wanted, length - CROP_STEP))

    return one(crop[0], smallest[0]), one(crop[1], smallest[1])


def choose_crop(crop: Size, smallest: Size, target: int, budget_s: float, images: int,
                images_per_s: Callable[[Size], float],
                clock: Callable[[], float] = time.perf_counter) -> CropChoice:
    """Keep ``crop`` when ``target`` epochs of ``images`` fit ``budget_s`` at the speed
    ``images_per_s(crop)`` measures, else shrink it (:func:`smaller_crop`) and measure again."""
    start = clock()
    timed: list[tuple[Size, float]] = []
    current = crop
    while True:
        timed.append((current, images_per_s(current)))
        choice = CropChoice(current, tuple(timed), images, budget_s, target, clock() - start)
        fits = choice.epochs(timed[-1][1])
        if fits >= target or current == smallest or len(timed) == MAX_PROBES:
            return choice
        current = smaller_crop(current, fits / target, smallest)


def default_min_crop(crop: Size) -> Size:
    """The smallest crop ``budget_epochs`` may choose when the recipe names none: half of each
    side, in :data:`CROP_STEP` steps."""
    height, width = (max(CROP_STEP, side // 2 // CROP_STEP * CROP_STEP) for side in crop)
    return height, width


def measure_training_speed(recipe: Recipe, model: torch.nn.Module, datamodule: SegDataModule,
                           classmap: ClassMap, class_weights: list[float] | None,
                           crop: Size) -> float:
    """Images/s of real training steps at ``crop`` on a copy of ``model``: ``datamodule``'s
    train loader with the crop's augmentation, forward, loss, backward, optimiser step, in the
    recipe's precision. The global RNGs are restored afterwards."""
    ignore_index = classmap.ignore_index
    datamodule.set_train_transform(train_augmentation(recipe, crop, ignore_index))
    with torch.random.fork_rng(devices=[]):
        module = SegmentationModule(recipe, classmap, class_weights,
                                    model=copy.deepcopy(model)).train()
        module.setup("fit")
        optimizer = build_optimizer(module.model, recipe.optim)
        bf16 = recipe.trainer.precision == "bf16"
        extra = getattr(module.model, "extra_loss", None)
        started, seen = None, 0
        loader = datamodule.train_dataloader()
        batches = iter(loader)
        try:
            for index in range(PROBE_WARMUP + PROBE_BATCHES):
                try:
                    images, masks = next(batches)
                except StopIteration:
                    break
                if index == PROBE_WARMUP:
                    started = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    outputs = module(images)
                    loss, _ = module.criterion.with_terms(outputs, masks)
                    if extra is not None:
                        loss = loss + extra(outputs, masks, ignore_index)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if started is not None:
                    seen += int(images.shape[0])
        finally:
            del batches, loader  # shuts the probe's loader workers down
    if started is None or seen == 0:
        return math.inf  # too few batches to time: any crop fits
    return seen / (time.perf_counter() - started)
