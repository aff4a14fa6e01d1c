"""Samplers and pruners from a study file, safe for several workers on one storage.

- ``tpe`` / ``random``: Optuna's samplers, re-seeded per trial from ``seed + trial.number``,
  so a single worker is reproducible and two workers (who start with the same history) do not
  draw the same point. TPE runs with ``constant_liar`` so running trials repel new ones.
- ``grid``: :class:`SweepSampler` — every point of a (conditional) grid once. A trial claims
  the lowest free point in its storage, then checks no other trial holds it (else it lets
  go and claims again). Points of FAILED trials are free again, so an
  interrupted sweep re-runs exactly the missing points.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from seglab.study.spec import PrunerSpec, SamplerSpec

GRID_ATTR = "seglab_grid_id"
EXHAUSTED_ATTR = "seglab_grid_exhausted"
_TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class PerTrialSeed(BaseSampler):
    """Delegate to ``factory(seed + trial.number)``, a fresh sampler for every trial."""

    def __init__(self, factory: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self._factory = factory
        self._seed = seed
        self._inner = factory(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        seed = None if self._seed is None else self._seed + trial.number
        self._inner = self._factory(seed)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:  # fmt: skip
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


class SweepSampler(BaseSampler):
    """Each trial takes one unvisited point of ``points`` (``{optuna name: value}`` dicts)."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        self.points = points

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        storage = study._storage
        rng = random.Random(trial.number)
        for _attempt in range(20):
            free = [i for i in range(len(self.points)) if i not in self._held(study, trial)]
            if not free:
                break
            storage.set_trial_system_attr(trial._trial_id, GRID_ATTR, free[0])
            # Claim, then look: of two workers claiming one point, at least the later one
            # sees the other and lets go (both may; they retry after a random pause).
            if free[0] not in self._held(study, trial):
                return
            storage.set_trial_system_attr(trial._trial_id, GRID_ATTR, None)
            time.sleep(rng.uniform(0.05, 0.5))
        storage.set_trial_system_attr(trial._trial_id, EXHAUSTED_ATTR, True)

    @staticmethod
    def _held(study: optuna.Study, trial: FrozenTrial) -> set[int]:
        """Grid points held by the study's other finished or running trials."""
        trials = study._storage.get_all_trials(study._study_id, deepcopy=False, states=_TAKEN)
        return {
            t.system_attrs[GRID_ATTR]
            for t in trials
            if t.number != trial.number and t.system_attrs.get(GRID_ATTR) is not None
        }

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        grid_id = trial.system_attrs.get(GRID_ATTR)
        if grid_id is None:
            raise RuntimeError(f"trial {trial.number} holds no grid point")
        return self.points[grid_id][param_name]


def make_sampler(spec: SamplerSpec, seed: int, points: list[dict[str, Any]] | None) -> BaseSampler:
    """The study's sampler (``points``: the grid, for ``grid``)."""
    if spec.name == "grid":
        return SweepSampler(points or [])
    if spec.name == "random":
        return PerTrialSeed(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
    kwargs: dict[str, Any] = {"constant_liar": True, "multivariate": spec.multivariate}
    if spec.n_startup_trials is not None:
        kwargs["n_startup_trials"] = spec.n_startup_trials
    return PerTrialSeed(lambda s: optuna.samplers.TPESampler(seed=s, **kwargs), seed)


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    """The study's pruner (``NopPruner`` for ``none``)."""
    if spec.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.n_startup_trials,
            # Steps are 1-based epochs and Optuna prunes from step == n_warmup_steps on.
            n_warmup_steps=spec.n_warmup_steps + 1,
            interval_steps=spec.interval_steps,
        )
    if spec.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_resource, reduction_factor=spec.reduction_factor
        )
    return optuna.pruners.NopPruner()
