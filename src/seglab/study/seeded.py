"""A study trial trained with several seeds (the study file's ``seeds: N``).

Each configuration (a trial's parameter set) is trained with ``trainer.seed`` 0..N-1 into
``studies/<name>/configs/<hash>/seed<k>/``, where the hash is that of the trial's recipe
(its name left out): a configuration asked again (a grid point re-run after a failure, a
continued study proposing the same values) reuses its finished seed runs instead of
training them twice. The trial's scores are the means over seeds; the spread
(:func:`seglab.seeds.summarise`: mean, std, t-interval) is kept beside them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from seglab.artifacts.rundir import is_finished
from seglab.config import Recipe
from seglab.seeds import summarise

CONFIGS_DIR = "configs"


def config_dir(study_dir: Path, recipe: Recipe) -> Path:
    """The folder of one configuration's seed runs: named by its recipe, not its trial."""
    doc = recipe.to_dict()
    doc.pop("name", None)
    doc.get("trainer", {}).pop("seed", None)
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
    return study_dir / CONFIGS_DIR / digest[:12]


def seed_recipe(recipe: Recipe, seed: int) -> Recipe:
    """``recipe`` with ``trainer.seed`` set and the seed in its name."""
    data = recipe.to_dict()
    data["name"] = f"{data.get('name') or 'trial'}-seed{seed}"
    data.setdefault("trainer", {})["seed"] = seed
    return Recipe.from_dict(data, source=f"{data['name']}")


def train_seeds(
    recipe: Recipe,
    folder: Path,
    seeds: int,
    measure: Callable[[Path, Recipe, Any], dict[str, Any]],
    callbacks: Sequence[Any],
    on_seed: Callable[[int, bool], None] | None = None,
) -> dict[str, Any]:
    """Train (or reuse) ``recipe`` with seeds 0..``seeds``-1 under ``folder``; return the
    mean of each score over seeds, with ``seed_summary`` ({score: summarise figures}) and
    ``seed_runs`` (the run folders). ``measure(run_dir, recipe, result)`` scores a seed: the
    value ``fit`` returned, or None for a finished run reused from its folder. ``callbacks``
    (the pruning reporter) go to seed 0 only: Optuna takes one value per epoch, and the first
    seed's curve is the one it prunes on."""
    # lazy: the engine brings Lightning (5.1 s); `seglab study show` reads seed_text only.
    from seglab.engine import fit

    per_seed: list[dict[str, Any]] = []
    runs = []
    for seed in range(seeds):
        run_dir = folder / f"seed{seed}"
        seeded = seed_recipe(recipe, seed)
        reused = is_finished(run_dir)
        if on_seed is not None:
            on_seed(seed, reused)
        fitted = None if reused else fit(seeded, run_dir,
                                         callbacks=list(callbacks) if seed == 0 else [])
        per_seed.append(measure(run_dir, seeded, fitted))
        runs.append(str(run_dir.resolve()))
    return mean_over_seeds(per_seed) | {"seed_runs": runs}


def mean_over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric score's mean over the seeds that measured it, and its seed summary."""
    keys = list(dict.fromkeys(k for doc in per_seed for k in doc))
    out: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for key in keys:
        values = [float(d[key]) for d in per_seed if _finite(d.get(key))]
        if len(values) == len(per_seed) and values:
            figures = summarise(values)
            out[key] = figures["mean"]
            summary[key] = figures
        elif per_seed and key in per_seed[0] and not _finite(per_seed[0].get(key)):
            out[key] = per_seed[0][key]  # text such as the split: the same for every seed
    out["seed_summary"] = summary
    out["seeds"] = len(per_seed)
    return out


def seed_text(summary: dict[str, Any] | None, metric: str) -> str:
    """``0.612 ± 0.014 [0.577, 0.647]`` for one score of a trial, or "" without seeds."""
    figures = (summary or {}).get(metric)
    if not figures or figures.get("n", 0) < 2:
        return ""
    low, high = figures["interval"]
    return f"{figures['mean']:.4f} ± {figures['std']:.4f} [{low:.4f}, {high:.4f}]"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
