"""Read run folders (the layout of :mod:`seglab.artifacts.rundir`) into one record per model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seglab.artifacts import rundir
from seglab.artifacts.rundir import is_finished as is_finished_run
from seglab.errors import DataError
from seglab.per_image import PerImageCounts, load_counts

__all__ = ["ModelResult", "is_finished_run", "load_run", "recipe_differences"]


@dataclass
class ModelResult:
    """Everything the report shows about one model.

    ``metrics`` is a run's metrics document, ``history`` the rows of its history, ``bench``
    the benchmark figures (``params``, ``trainable_params``, ``size_mb``, ``gflops``,
    ``latency_ms``, ``latency_p90_ms``, ``gpu_mem_mb``, ``device``, ``input``), each optional.
    ``per_image`` holds the evaluation's per-image counts (:mod:`seglab.per_image`) when the
    run stored them: paired significance tests need them.
    """

    label: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    confusion: np.ndarray | None = None
    bench: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    source: str = ""
    status: str = "evaluated"  # "trained", "reused" or "evaluated"
    per_image: PerImageCounts | None = None

    @property
    def train_time_s(self) -> float | None:
        value = self.metrics.get("train_time_s")
        return float(value) if _is_number(value) else None

    @property
    def epochs(self) -> int | None:
        value = self.metrics.get("epochs")
        if _is_number(value):
            return int(value)
        return len(self.history) or None

    def per_class_iou(self, names: list[str]) -> list[float]:
        """IoU per class name, NaN where the class has no score."""
        per_class = self.metrics.get("per_class") or {}
        values = []
        for name in names:
            score = (per_class.get(name) or {}).get("iou")
            values.append(float(score) if _is_number(score) else math.nan)
        return values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_run(
    run_dir: str | Path,
    *,
    label: str | None = None,
    metrics_dir: str | Path | None = None,
    status: str = "reused",
) -> ModelResult:
    """Read a run folder into a :class:`ModelResult`.

    ``metrics_dir`` points at another folder holding the metrics and confusion matrix (e.g. a
    re-evaluation on a different split); history and recipe always come from ``run_dir``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run folder not found")
    scores_dir = Path(metrics_dir) if metrics_dir is not None else run_dir
    metrics = rundir.read_metrics(scores_dir)
    if metrics_dir is not None:
        # A re-evaluation has no training time of its own: keep the run's.
        if rundir.metrics_path(run_dir).is_file():
            trained = rundir.read_metrics(run_dir)
            for key in ("train_time_s", "epochs"):
                if key in trained and key not in metrics:
                    metrics[key] = trained[key]
    return ModelResult(
        label=label or run_dir.name,
        metrics=metrics,
        history=rundir.read_history(run_dir),
        confusion=rundir.read_confusion(scores_dir),
        recipe=rundir.read_recipe(run_dir),
        source=str(run_dir),
        status=status,
        per_image=(load_counts(rundir.per_image_path(scores_dir))
                   if rundir.per_image_path(scores_dir).is_file() else None),
    )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


# Keys that legitimately differ between the runs of one comparison.
_EXPECTED_TO_DIFFER = ("model.", "name", "run_dir", "output", "out_dir", "trainer.run_dir")


def recipe_differences(results: list[ModelResult]) -> dict[str, dict[str, Any]]:
    """Recipe settings (other than the model) that differ between runs: key -> {label: value}.

    An empty answer means every model was trained under one recipe, i.e. the comparison is fair.
    """
    flats = {r.label: _flatten(r.recipe) for r in results if r.recipe}
    if len(flats) < 2:
        return {}
    keys = sorted(set().union(*flats.values()))
    differing = {}
    for key in keys:
        if key.startswith(_EXPECTED_TO_DIFFER) or key in _EXPECTED_TO_DIFFER:
            continue
        values = {label: flat.get(key) for label, flat in flats.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            differing[key] = values
    return differing
