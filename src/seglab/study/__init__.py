"""Studies: Optuna searches and sweeps over recipes, each trial an ordinary run folder.

``run_study("configs/studies/x.yaml")`` runs (or continues) a study into ``studies/<name>/``:
``trials/<number>/`` run folders, ``results.json``, ``best_recipe.yaml``, ``report.html``.
Modules: :mod:`.spec` (the study file), :mod:`.space` (search spaces), :mod:`.sampling`
(samplers, pruners, the grid sweep), :mod:`.storage` (Optuna storage, locks, dead trials),
:mod:`.pruning` (the per-epoch Lightning reporter), :mod:`.runner`, :mod:`.results`,
:mod:`.report`. Optuna is the ``search`` extra; it loads when a study runs.
"""

from __future__ import annotations

from pathlib import Path

from seglab.config import Recipe
from seglab.study.results import best_recipe_path, load_results, study_dir_of
from seglab.study.runner import StudyEvent, StudyOutcome, run_study
from seglab.study.space import SearchSpace, parse_space
from seglab.study.spec import StudySpec, load_spec


def best_recipe(name_or_dir: str | Path, root: str | Path = "studies") -> Recipe:
    """The best trial's recipe of a study (by name under ``root``, or its folder)."""
    return Recipe.from_yaml(best_recipe_path(name_or_dir, root))


__all__ = [
    "SearchSpace",
    "StudyEvent",
    "StudyOutcome",
    "StudySpec",
    "best_recipe",
    "best_recipe_path",
    "load_results",
    "load_spec",
    "parse_space",
    "run_study",
    "study_dir_of",
]
