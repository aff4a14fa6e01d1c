"""Read run folders (the contract in docs/internals.md) into one record per model."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seglab.errors import DataError

# Keys of metrics.json shown as accuracy columns (fractions in 0..1).
ACCURACY_KEYS = ("miou", "pixel_acc", "mean_acc", "mean_dice", "f1_macro")


@dataclass
class ModelResult:
    """Everything the report shows about one model.

    ``metrics`` is a metrics.json document, ``history`` the rows of history.csv, ``bench``
    the benchmark figures (``params``, ``trainable_params``, ``size_mb``, ``gflops``,
    ``latency_ms``, ``latency_p90_ms``, ``gpu_mem_mb``, ``device``, ``input``), each optional.
    """

    label: str
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    confusion: np.ndarray | None = None
    bench: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    source: str = ""
    status: str = "evaluated"  # "trained", "reused" or "evaluated"

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


def is_finished_run(path: str | Path) -> bool:
    """True when ``path`` is a finished run folder (metrics.json with an mIoU, and model/)."""
    path = Path(path)
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file() or not (path / "model" / "config.json").is_file():
        return False
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(metrics, dict) and _is_number(metrics.get("miou"))


def read_metrics(path: Path) -> dict[str, Any]:
    """Load a metrics.json document, with a clear error when it is missing or broken."""
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: metrics.json not found (is this a finished run folder?)") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(metrics, dict) or "miou" not in metrics:
        raise DataError(f"{path}: metrics document has no 'miou' key")
    return metrics


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows of history.csv as floats (empty cells become NaN); [] when the file is absent."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                if key is None:
                    continue
                try:
                    parsed[key] = float(value) if value not in ("", None) else math.nan
                except ValueError:
                    parsed[key] = math.nan
            rows.append(parsed)
    return rows


def read_confusion(path: Path) -> np.ndarray | None:
    """The raw confusion matrix (rows = truth, columns = prediction) or None when absent."""
    if not path.is_file():
        return None
    matrix = np.load(path, allow_pickle=False)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DataError(f"{path}: confusion matrix must be square, got shape {matrix.shape}")
    return matrix


def read_recipe(path: Path) -> dict[str, Any] | None:
    """The resolved recipe as a plain dict, or None when the run has no recipe.yaml."""
    if not path.is_file():
        return None
    import yaml

    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from exc
    return recipe if isinstance(recipe, dict) else None


def load_run(
    run_dir: str | Path,
    *,
    label: str | None = None,
    metrics_dir: str | Path | None = None,
    status: str = "reused",
) -> ModelResult:
    """Read a run folder into a :class:`ModelResult`.

    ``metrics_dir`` points at another folder holding metrics.json / confusion.npy (e.g. a
    re-evaluation on a different split); history and recipe always come from ``run_dir``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run folder not found")
    scores_dir = Path(metrics_dir) if metrics_dir is not None else run_dir
    metrics = read_metrics(scores_dir / "metrics.json")
    if metrics_dir is not None:
        # A re-evaluation has no training time of its own: keep the run's.
        original = run_dir / "metrics.json"
        if original.is_file():
            trained = read_metrics(original)
            for key in ("train_time_s", "epochs"):
                if key in trained and key not in metrics:
                    metrics[key] = trained[key]
    return ModelResult(
        label=label or run_dir.name,
        metrics=metrics,
        history=read_history(run_dir / "history.csv"),
        confusion=read_confusion(scores_dir / "confusion.npy"),
        recipe=read_recipe(run_dir / "recipe.yaml"),
        source=str(run_dir),
        status=status,
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
