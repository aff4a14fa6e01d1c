"""``fit(recipe)``: the one entry point that trains a recipe into a run folder.

It holds the run folder for the whole training, in this one place: rank 0 takes the folder's
lock (a second training into it is refused at once, :mod:`seglab.artifacts.lock`); the other
processes of a distributed run (which Lightning, torchrun or SLURM start on the same command)
take none. Below it sit the two ways of training, neither knowing the other's caller:
:func:`seglab.engine.training.train_one` (one training) and
:func:`seglab.engine.kfold.cross_validate` (k trainings, which calls ``train_one``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from seglab.artifacts.lock import folder_lock
from seglab.config import Recipe
from seglab.engine.distributed import is_rank_zero
from seglab.engine.kfold import cross_validate
from seglab.engine.run_result import FitResult
from seglab.engine.training import train_one
from seglab.errors import ConfigError
from seglab.paths import default_run_dir


def fit(
    recipe: Recipe,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> FitResult:
    """Train ``recipe`` into ``run_dir`` (default ``runs/<recipe.name>``); returns the
    :class:`~seglab.engine.run_result.FitResult` (scores, history, plan; it stands for the
    run folder where a path is expected: ``os.fspath(result)``, ``result / "model"``).

    With ``trainer.folds = k`` it runs k-fold cross-validation instead (see
    :func:`seglab.engine.kfold.cross_validate`). ``callbacks`` are extra Lightning callbacks
    (one training only).

    Raises:
        FolderLockedError: another process is training into ``run_dir``.
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe.name)
    if recipe.trainer.folds and callbacks:
        raise ConfigError("extra training callbacks are not supported with trainer.folds")
    with run_folder(run_dir):
        if recipe.trainer.folds:
            return cross_validate(recipe, run_dir, resume=resume)
        return train_one(recipe, run_dir, resume=resume, callbacks=callbacks)


@contextlib.contextmanager
def run_folder(run_dir: Path, purpose: str = "seglab train") -> Iterator[bool]:
    """Hold ``run_dir`` for a training: rank 0 locks it, other ranks do not (they write nothing
    but what Lightning's strategy hands them). Yields whether this process is rank 0."""
    zero = is_rank_zero()
    with folder_lock(run_dir, purpose) if zero else contextlib.nullcontext():
        yield zero
