"""The training data of a run: the recipe's augmentation at a given crop, and its loaders.

One place builds them, so the crop chosen for a time budget (:mod:`seglab.engine.crop_choice`)
is timed with exactly the transform and loaders that training then uses.
"""

from __future__ import annotations

from typing import Any

from seglab.config import Recipe
from seglab.data.datamodule import SegDataModule
from seglab.data.transforms import train_transform


def train_augmentation(recipe: Recipe, crop: tuple[int, int] | None, ignore_index: int) -> Any:
    """The recipe's training transform (``seglab.data.transforms.train_transform``) at ``crop``."""
    aug = recipe.augment
    return train_transform(
        crop,
        scale_range=aug.scale_range,
        hflip=aug.hflip,
        rotation=aug.rotation,
        brightness=aug.brightness,
        saturation=aug.saturation,
        noise_sigma=aug.noise_sigma,
        resize=aug.resize,
        ignore_index=ignore_index,
    )


def build_datamodule(recipe: Recipe, source: Any, crop: tuple[int, int] | None) -> SegDataModule:
    """The data layer's ``SegDataModule`` with the recipe's training augmentation at ``crop``
    (:func:`seglab.engine.run_plan.train_crop`)."""
    return SegDataModule(
        source,
        batch_size=recipe.data.batch_size,
        num_workers=recipe.data.num_workers,
        train_transform=train_augmentation(recipe, crop, source.classmap.ignore_index),
        eval_transform=None,  # labels stay at their own size; eval_resize happens on device
        seed=recipe.trainer.seed,
        train_split=recipe.data.train_split,
        val_split=recipe.data.val_split or "val",
        test_split=recipe.data.test_split or "test",
        cache=recipe.data.cache,
    )
