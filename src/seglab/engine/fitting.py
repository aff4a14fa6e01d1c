"""``fit(recipe)``: the one entry point that trains a recipe into a run folder.

It sits above the two ways of training, so neither knows the other's caller:
:func:`seglab.engine.training.train_one` (one training) and
:func:`seglab.engine.kfold.cross_validate` (k trainings, which calls ``train_one``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seglab.config import Recipe
from seglab.engine.kfold import cross_validate
from seglab.engine.training import train_one
from seglab.errors import ConfigError


def fit(
    recipe: Recipe,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> Path:
    """Train ``recipe`` into ``run_dir`` (default ``runs/<recipe.name>``) and return the folder.

    With ``trainer.folds = k`` it runs k-fold cross-validation instead (see
    :func:`seglab.engine.kfold.cross_validate`). ``callbacks`` are extra Lightning callbacks
    (one training only).
    """
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / recipe.name
    if recipe.trainer.folds:
        if callbacks:
            raise ConfigError("extra training callbacks are not supported with trainer.folds")
        cross_validate(recipe, run_dir, resume=resume)
    else:
        train_one(recipe, run_dir, resume=resume, callbacks=callbacks)
    return run_dir
