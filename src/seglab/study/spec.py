"""The study file: a base recipe, a search space, objective(s), sampler, pruner and budgets.

```yaml
name: lraspp_lr_optimiser
base: configs/camvid11_lraspp.yaml        # a recipe path, or an inline recipe mapping
overrides: [trainer.max_epochs=6]         # optional, applied to the base
space:
  optim.lr: {log_uniform: [1.0e-4, 1.0e-2]}
  optim.name: {choice: [sgd, adam, rmsprop]}
objective: {metric: val_miou, direction: maximize}   # or a list of two: a Pareto front
trials: 12
sampler: tpe                              # tpe | random | grid, or {name: tpe, n_startup_trials: 4}
pruner: median                            # none | median | successive_halving (or a mapping)
seed: 0
trial_minutes: 2                          # per-trial budget (the recipe's trainer.max_minutes)
seeds: 3                                  # optional: each configuration with trainer.seed 0..2
```

``grid: true`` is the same as ``sampler: grid``: every point of the (finite) space once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seglab.config import Recipe, apply_overrides, read_recipe_text
from seglab.errors import ConfigError
from seglab.metrics import (
    BEST_VAL_MIOU,
    VAL_LOSS,
    VAL_MIOU,
    VAL_PIXEL_ACC,
    find_metric,
    metric_keys,
)
from seglab.recipes import resolve_recipe
from seglab.study.space import SearchSpace, parse_space, validate_space
from seglab.yaml_limits import load_yaml

# Objective metrics measured after every epoch (history.csv): these can drive a pruner.
EPOCH_METRICS = (VAL_MIOU, VAL_LOSS, VAL_PIXEL_ACC)
# Measured on the trial's saved model with seglab.bench (CPU, batch 1).
BENCH_METRICS = ("latency_ms", "params", "gflops")
# Facts of the run's metrics.json beside its scores.
RUN_FACTS = (BEST_VAL_MIOU, "train_time_s", "epochs", "eval_time_s")


def run_metrics() -> tuple[str, ...]:
    """Scalars of the run's metrics.json a study may optimise (its final evaluation: the test
    split when there is one): the registry's objective scores, then the run's facts."""
    return metric_keys("objective") + RUN_FACTS


def objective_metrics() -> tuple[str, ...]:
    """Every metric an objective may name (read when called: registered metrics included)."""
    return EPOCH_METRICS + BENCH_METRICS + run_metrics()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    """What a trial is scored on."""

    metric: str = Field(VAL_MIOU, description="; ".join(
        [f"{'/'.join(EPOCH_METRICS)}: at the best epoch (per-epoch, prunable)",
         f"{'/'.join(BENCH_METRICS)}: the trial's model benchmarked on CPU",
         "miou, mean_dice, ...: the run's final evaluation (metrics.json)"]))  # fmt: skip
    direction: Literal["maximize", "minimize"] = Field(
        "maximize", description="default: the registered metric's direction, else maximize")

    @model_validator(mode="before")
    @classmethod
    def _metric_direction(cls, data: Any) -> Any:
        # A registered score says which way is better: a lower-is-better one minimises unless
        # told otherwise. Other metrics (val_loss, latency_ms...) keep the stated default.
        if isinstance(data, dict) and "direction" not in data:
            metric = find_metric(str(data.get("metric", VAL_MIOU)))
            if metric is not None and metric.direction == "lower":
                return {**data, "direction": "minimize"}
        return data

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        known = objective_metrics()
        if value not in known:
            raise ValueError(f"unknown metric {value!r}; choose one of {', '.join(known)}")
        return value


class SamplerSpec(_Strict):
    """Optuna sampler: TPE (default), random search, or a full grid sweep."""

    name: Literal["tpe", "random", "grid"] = "tpe"
    n_startup_trials: int | None = Field(None, ge=1, description="TPE: random trials first")
    multivariate: bool = False


class PrunerSpec(_Strict):
    """Stops unpromising trials early from their per-epoch objective."""

    name: Literal["none", "median", "successive_halving"] = "none"
    n_startup_trials: int = Field(5, ge=0, description="median: trials before pruning starts")
    n_warmup_steps: int = Field(
        0, ge=0, description="median: first epochs never pruned (0: a trial may stop after epoch 1)"
    )
    interval_steps: int = Field(1, ge=1)
    min_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)


class StudySpec(_Strict):
    """A validated study file (see the module docstring)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base: str | dict[str, Any]
    overrides: list[str] = Field(default_factory=list)
    space: dict[str, Any] = Field(default_factory=dict)
    grid: bool = False
    objective: Objective | list[Objective] = Field(default_factory=Objective)
    trials: int | None = Field(None, ge=1, description="trials to finish (default: 20; grid: all)")
    timeout_min: float | None = Field(None, gt=0, description="stop starting trials after this")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    seed: int = 0
    trial_minutes: float | None = Field(None, gt=0, description="per-trial training budget")
    seeds: int = Field(1, description="training seeds per configuration (objective: their mean)")
    storage: str | None = Field(None, description="SQLAlchemy URL or journal file path")
    source: str | None = Field(None, exclude=True, description="the study file it came from")

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("seeds", mode="before")
    @classmethod
    def _whole_seeds(cls, value: Any) -> Any:
        # A bool is an int to Python and 2.5 would be truncated: refuse both by name.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"seeds must be a whole number of at least 1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        if self.grid and self.sampler.name not in ("tpe", "grid"):
            raise ValueError(f"grid: true conflicts with sampler {self.sampler.name!r}")
        if self.grid:
            self.sampler = SamplerSpec(name="grid")
        self.grid = self.sampler.name == "grid"
        objectives = self.objectives
        if not 1 <= len(objectives) <= 2:
            raise ValueError("objective: give one objective, or a list of two (a Pareto front)")
        if self.pruner.name != "none":
            if len(objectives) > 1:
                raise ValueError("a pruner needs a single objective (Optuna cannot prune "
                                 "multi-objective trials): set pruner: none")  # fmt: skip
            if objectives[0].metric not in EPOCH_METRICS:
                allowed = ", ".join(EPOCH_METRICS)
                raise ValueError(f"a pruner needs a per-epoch objective ({allowed}), "
                                 f"not {objectives[0].metric}")  # fmt: skip
        return self

    @property
    def objectives(self) -> list[Objective]:
        return self.objective if isinstance(self.objective, list) else [self.objective]

    def base_mapping(self) -> dict[str, Any]:
        """The base recipe as plain data, overrides applied (``${SEGLAB_DATA}`` not expanded)."""
        if isinstance(self.base, dict):
            data = self.base
        else:
            path = _find_base(self.base, self.source)
            data = load_yaml(read_recipe_text(path), f"base recipe {path}") or {}
            if not isinstance(data, dict):
                raise ConfigError(f"base recipe {path}: expected a mapping of sections")
        return apply_overrides(data, self.overrides)

    def search_space(self) -> SearchSpace:
        return parse_space(self.space, source=f"{self._where()} space")

    def validate_all(self) -> tuple[dict[str, Any], SearchSpace]:
        """Check the base recipe and the space against each other; nothing trains."""
        base = self.base_mapping()
        Recipe.from_dict(base, source=f"{self._where()} base recipe")
        if base.get("trainer", {}).get("folds"):
            raise ConfigError(f"{self._where()}: trainer.folds (k-fold) cannot run in a study")
        space = self.search_space()
        if not space.dimensions:
            raise ConfigError(f"{self._where()}: the space is empty (nothing to search)")
        if any(d.key == "trainer.folds" for d in space.distributions().values()):
            raise ConfigError(f"{self._where()} space trainer.folds: k-fold is not searchable")
        validate_space(space, base, grid=self.grid)
        return base, space

    def fingerprint(self, base: dict[str, Any]) -> str:
        """What makes two runs the same study: base recipe, space, objectives, sampler kind."""
        doc = {
            "base": base,
            "space": self.space,
            "objectives": [o.model_dump() for o in self.objectives],
            "grid": self.grid,
            "trial_minutes": self.trial_minutes,
        }
        if self.seeds > 1:  # only then, so studies written before the key keep their print
            doc["seeds"] = self.seeds
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def _where(self) -> str:
        return f"study {self.source}" if self.source else f"study {self.name}"


def _find_base(text: str, source: str | None) -> Path:
    """A base path as written: from the current folder, beside the study file, else shipped."""
    path = Path(text).expanduser()
    candidates = [path]
    if source and not path.is_absolute():
        candidates.append(Path(source).parent / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    try:  # a shipped recipe's name or configs/ path (a pip-installed seglab has no checkout)
        return resolve_recipe(text)
    except ConfigError:
        pass
    tried = " or ".join(str(c) for c in candidates)
    raise ConfigError(f"base recipe {text!r} not found (looked for {tried} and the shipped "
                      "recipes)")


def load_spec(source: str | Path | dict[str, Any], name: str | None = None) -> StudySpec:
    """Read a study file (or mapping) into a StudySpec; errors name the file and field."""
    where = "study mapping"
    if isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        where = f"study file {path}"
        if not path.is_file():
            raise ConfigError(f"{where} does not exist")
        data = load_yaml(read_recipe_text(path), where)
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping (name, base, space, ...)")
        data["source"] = str(path)
    if name is not None:
        data["name"] = name
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        lines = [f"{where} is invalid:"]
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key (check the spelling)"
            lines.append(f"  {loc}: {message}")
        raise ConfigError("\n".join(lines)) from None
