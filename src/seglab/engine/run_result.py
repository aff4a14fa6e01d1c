"""What ``fit`` hands back: :class:`FitResult`, the run's scores, history and plan as values.

The run folder holds the same facts as files (``metrics.json``, ``history.csv``, ``plan.json``,
``kfold.json``) for people and for ``--resume``; callers in the same process (``seglab train``,
compare, the demo, studies) read the value instead of reading those files back.

``fit`` used to return the run folder, so a result still stands where that path stood:
``os.fspath(result)``, ``Path(result)``, ``str(result)`` and ``result / "model"`` are the run
folder's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seglab.artifacts import rundir
from seglab.engine.run_plan import RunPlan
from seglab.per_image import PerImageCounts


@dataclass(frozen=True)
class FitResult:
    """One finished ``fit``.

    ``metrics`` is the document of ``metrics.json`` (the scored split's scores with the
    training summary: ``train_time_s``, ``epochs``, ``best_val_miou`` ...); with
    ``trainer.folds`` the summary of ``kfold.json``; when no split was scored, the training
    summary alone. ``history`` holds the rows of ``history.csv`` as :func:`seglab.artifacts.
    rundir.read_history` reads them. ``plan`` is how the run was resolved (None for a k-fold
    run, whose ``folds`` hold one result each, and for a fold finished before a resume).
    """

    run_dir: Path
    metrics: dict[str, Any]
    history: tuple[dict[str, Any], ...] = ()
    plan: RunPlan | None = None
    folds: tuple[FitResult, ...] = ()
    confusion: np.ndarray | None = None  # the scored split's, as confusion.npy holds it
    per_image: PerImageCounts | None = None  # as per_image.npz holds them

    @property
    def scored(self) -> bool:
        """Whether a split was scored (``metrics.json`` was written)."""
        return not self.folds and "miou" in self.metrics

    @property
    def model_dir(self) -> Path:
        """The best weights as a ``save_pretrained`` folder (``run_dir/model``)."""
        return rundir.model_dir(self.run_dir)

    def __fspath__(self) -> str:
        return os.fspath(self.run_dir)

    def __str__(self) -> str:
        return str(self.run_dir)

    def __truediv__(self, other: str | os.PathLike) -> Path:
        return self.run_dir / other
