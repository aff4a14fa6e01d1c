"""k-fold cross-validation: one training per fold, mean and std of every score.

The folds split the union of the recipe's train and val splits (the test split stays unseen).
Fold ``i`` trains on the other folds, early-stops and picks its best checkpoint on fold ``i``,
and is scored on fold ``i`` with the same evaluation as any run. The summary,
``kfold.json``, holds mean and sample standard deviation (ddof=1) per metric and per-class IoU,
with the value of every fold.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from seglab.artifacts import rundir
from seglab.config import Recipe
from seglab.data.formats import open_source
from seglab.data.splits import kfold
from seglab.engine.run_result import FitResult
from seglab.engine.training import train_one
from seglab.errors import ConfigError
from seglab.io_utils import atomic_write_text, json_safe
from seglab.metrics import metric_keys


def fold_sources(source: Any, k: int, seed: int, splits: tuple[str, ...]) -> list[Any]:
    """``k`` copies of ``source`` whose ``train``/``val`` splits are the folds of ``splits``."""
    pool = [pair for name in splits for pair in source.splits.get(name, [])]
    if len(pool) < 2 * k:
        raise ConfigError(
            f"trainer.folds={k} needs at least {2 * k} image/mask pairs in "
            f"{' + '.join(splits)}, {source.spec} has {len(pool)}"
        )
    out = []
    for i, (train_idx, val_idx) in enumerate(kfold(len(pool), k, seed=seed)):
        fold_splits = {
            "train": [pool[j] for j in train_idx],
            "val": [pool[j] for j in val_idx],
        }
        notes = [*source.notes, f"fold {i + 1}/{k} of {' + '.join(splits)} (seed {seed})"]
        out.append(dataclasses.replace(source, splits=fold_splits, notes=notes))
    return out


def summarize(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std and per-fold values of each summary metric and each class's IoU."""

    def stats(values: list[float | None]) -> dict[str, Any]:
        clean = [v for v in values if v is not None and not math.isnan(v)]
        mean = float(np.mean(clean)) if clean else None
        std = float(np.std(clean, ddof=1)) if len(clean) > 1 else None
        return {"mean": mean, "std": std, "values": values}

    metrics = {key: stats([d.get(key) for d in docs]) for key in metric_keys("folds")}
    names = list(docs[0]["per_class"]) if docs else []
    per_class = {n: stats([d["per_class"][n]["iou"] for d in docs]) for n in names}
    return {"folds": len(docs), "metrics": metrics, "per_class_iou": per_class}


def cross_validate(recipe: Recipe, run_dir: str | Path, resume: bool = False) -> FitResult:
    """Run ``recipe.trainer.folds`` trainings under ``run_dir/fold_<i>`` and write kfold.json;
    the result's ``metrics`` is that summary and its ``folds`` the folds' results."""
    k = recipe.trainer.folds
    if not k:
        raise ConfigError("cross_validate needs trainer.folds >= 2")
    run_dir = Path(run_dir)
    if not resume and rundir.kfold_path(run_dir).exists():
        raise ConfigError(f"{run_dir} already holds a k-fold run: pass --resume or another name")
    source = open_source(recipe.data.spec, **recipe.data.options)
    pooled = tuple(s for s in (recipe.data.train_split, recipe.data.val_split) if s)
    folds = fold_sources(source, k, recipe.trainer.seed, pooled)
    fold_recipe = recipe.model_copy(deep=True)
    fold_recipe.data.train_split, fold_recipe.data.val_split = "train", "val"
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe.to_yaml(rundir.recipe_path(run_dir))
    results = []
    for i, fold_source in enumerate(folds):
        folder = rundir.fold_dir(run_dir, i)
        if resume and rundir.metrics_path(folder).is_file():  # finished before the resume
            results.append(FitResult(folder, rundir.read_metrics(folder),
                                     tuple(rundir.read_history(folder))))
            continue
        resume_fold = resume and rundir.can_resume(folder)
        fold_recipe.name = f"{recipe.name}_fold{i}"
        results.append(
            train_one(
                fold_recipe, folder, resume=resume_fold, source=fold_source, evaluate_split="val"
            )
        )
    summary = {"name": recipe.name, **summarize([r.metrics for r in results])}
    atomic_write_text(rundir.kfold_path(run_dir), json.dumps(json_safe(summary), indent=2) + "\n")
    return FitResult(run_dir, summary, folds=tuple(results))
