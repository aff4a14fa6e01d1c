"""Run (or continue) a study: Optuna ask/tell over recipes, each trial an ordinary run folder.

``run_study(spec)`` validates everything first, opens the storage, then repeats until the
study holds the requested number of COMPLETE + PRUNED trials: fail the RUNNING trials of dead
processes, ask for a trial (under a lock on the study folder, so local workers never
over-run the count), train it into ``studies/<name>/trials/<number>/`` with a per-epoch
reporter (pruning), score it and tell the storage. Several processes, on one machine or many
sharing a storage URL, run one study this way. ``results.json`` and ``best_recipe.yaml`` are
rewritten after every trial, ``report.html`` when a worker ends (both under the study
folder's lock). The storage is shared on purpose; what must be exclusive is locked: each
trial's run folder (by its training, :func:`seglab.artifacts.lock.folder_lock`: a second
process training into it is refused) and the writing of the report files.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglab.artifacts.rundir import model_dir, read_history, read_metrics
from seglab.config import Recipe
from seglab.errors import ConfigError, SeglabError
from seglab.io_utils import atomic_write_text, json_safe
from seglab.metrics import VAL_MIOU
from seglab.stops import Stopped
from seglab.study.seeded import config_dir, train_seeds
from seglab.study.space import apply_values
from seglab.study.spec import BENCH_METRICS, EPOCH_METRICS, StudySpec, load_spec, run_metrics
from seglab.study.storage import (
    Heartbeat,
    fail_dead_trials,
    folder_lock,
    hide_password,
    open_storage,
    owner_attrs,
    storage_url,
)

STUDY_FILE = "study.json"
TRIALS_DIR = "trials"
ASK_LOCK = ".ask.lock"
STUDY_LOCK = ".study.lock"
DEFAULT_TRIALS = 20
MAX_FAILURES_IN_A_ROW = 3


@dataclass
class StudyEvent:
    """One progress message: ``kind`` is study, trial_start, epoch, trial_end, note or done."""

    kind: str
    message: str
    trial: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyOutcome:
    """What ``run_study`` leaves: the folder, its results document and the report files."""

    name: str
    study_dir: Path
    results: dict[str, Any]
    files: dict[str, Path]
    stopped: str  # "done", "timeout" or "others running"


Progress = Callable[[StudyEvent], None]


@dataclass
class _Context:
    spec: StudySpec
    base: dict[str, Any]
    study_dir: Path
    target: int
    url: str
    progress: Progress
    grid_size: int | None = None


def run_study(
    source: str | Path | dict[str, Any] | StudySpec,
    *,
    name: str | None = None,
    trials: int | None = None,
    timeout_min: float | None = None,
    storage: str | None = None,
    out: str | Path = "studies",
    overrides: list[str] | tuple[str, ...] = (),
    progress: Progress | None = None,
) -> StudyOutcome:
    """Run the study file ``source`` until it holds its trials (or ``timeout_min`` passes).

    ``name``, ``trials``, ``timeout_min`` and ``storage`` replace the file's values;
    ``overrides`` (``section.field=value``) apply to the base recipe. Re-running the same
    command continues the study. ``progress`` receives :class:`StudyEvent` messages.
    """
    # lazy: Optuna is the optional `search` extra; study.report loads torch and matplotlib
    # (2.6 s for torch alone on a loaded 2-core machine) that `seglab study show` never needs
    import optuna

    from seglab.study.report import write_report, write_results
    from seglab.study.sampling import make_pruner, make_sampler

    spec = _load(source, name, overrides)
    base, space = spec.validate_all()
    _check_data(base, space)
    points = space.grid() if spec.grid else None
    emit = progress or (lambda event: None)
    target = trials or spec.trials or (len(points) if points else DEFAULT_TRIALS)
    if points is not None and target > len(points):
        emit(StudyEvent("note", f"the grid has {len(points)} points: running {len(points)}"))
        target = len(points)
    study_dir = Path(out) / spec.name
    ctx = _Context(spec, base, study_dir, target, storage_url(storage or spec.storage, study_dir),
                   emit, len(points) if points else None)  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress replaces its log lines
    with folder_lock(study_dir / STUDY_LOCK):
        study = optuna.create_study(
            storage=open_storage(ctx.url),
            study_name=spec.name,
            sampler=make_sampler(spec.sampler, spec.seed, points),
            pruner=make_pruner(spec.pruner),
            directions=[o.direction for o in spec.objectives],
            load_if_exists=True,
        )
        _claim_study(study, ctx, timeout_min)
    done = _count(study)
    emit(StudyEvent("study", f"study {spec.name}: {done}/{target} trials finished; storage "
                    f"{hide_password(ctx.url)}; trials in {study_dir / TRIALS_DIR}"))  # fmt: skip
    timeout = timeout_min if timeout_min is not None else spec.timeout_min
    stopped = _loop(study, ctx, space, timeout)
    with folder_lock(study_dir / STUDY_LOCK):
        results = write_results(study, ctx)
        files = write_report(study, ctx, results)
    emit(StudyEvent("done", f"study {spec.name}: {_count(study)}/{target} trials finished "
                    f"({stopped}); report {files['report']}"))  # fmt: skip
    return StudyOutcome(spec.name, study_dir, results, files, stopped)


def _load(source: Any, name: str | None, overrides: Any) -> StudySpec:
    if isinstance(source, StudySpec):
        spec = source.model_copy(update={"name": name} if name else {})
    else:
        spec = load_spec(source, name=name)
    if overrides:
        spec = spec.model_copy(update={"overrides": [*spec.overrides, *overrides]})
    return spec


def _check_data(base: dict[str, Any], space: Any) -> None:
    """Open the dataset once: a wrong path is an error before any trial starts."""
    if any(key.startswith("data.spec") or key == "data.options" for key in space.keys):
        return
    from seglab.data.formats import open_source  # lazy: loads torch (2.6 s, see run_study)

    recipe = Recipe.from_dict(base, source="the base recipe")
    open_source(recipe.data.spec, **recipe.data.options)


def _claim_study(study: Any, ctx: _Context, timeout_min: float | None) -> None:
    """Record what the study is; refuse to continue a study created from another file."""
    fingerprint = ctx.spec.fingerprint(ctx.base)
    stored = study.user_attrs.get("seglab_fingerprint")
    if stored is None:
        trials_dir = ctx.study_dir / TRIALS_DIR
        if study.trials or (trials_dir.is_dir() and any(trials_dir.iterdir())):
            raise ConfigError(
                f"{trials_dir} holds trials of an earlier study that storage "
                f"{hide_password(ctx.url)} does not know: remove the folder or choose another "
                "--name"
            )
        study.set_user_attr("seglab_fingerprint", fingerprint)
        study.set_user_attr("seglab_spec", json_safe(ctx.spec.model_dump(mode="json")))
    elif stored != fingerprint:
        raise ConfigError(
            f"study {ctx.spec.name} in {hide_password(ctx.url)} was started from a different "
            "base recipe, space or objective: continue it with the same file, or choose another "
            "--name"
        )
    doc = {
        "name": ctx.spec.name,
        "storage": hide_password(ctx.url),  # never a password in a file
        "target": ctx.target,
        "timeout_min": timeout_min,
        "spec": ctx.spec.model_dump(mode="json"),
        "source": ctx.spec.source,
        "base": ctx.base,
    }
    atomic_write_text(ctx.study_dir / STUDY_FILE, json.dumps(json_safe(doc), indent=2) + "\n")


def _count(study: Any, running: bool = False) -> int:
    from optuna.trial import TrialState  # lazy: the optional `search` extra

    states = [TrialState.COMPLETE, TrialState.PRUNED] + ([TrialState.RUNNING] if running else [])
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def _loop(study: Any, ctx: _Context, space: Any, timeout_min: float | None) -> str:
    deadline = time.monotonic() + timeout_min * 60 if timeout_min else None
    failures: list[str] = []
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        with folder_lock(ctx.study_dir / ASK_LOCK):
            for number in fail_dead_trials(study):
                ctx.progress(StudyEvent("note", f"trial {number} was interrupted (its process "
                                        "stopped): marked FAIL", trial=number))  # fmt: skip
            if _count(study) >= ctx.target:
                return "done"
            if _count(study, running=True) >= ctx.target:
                return "others running"
            trial = study.ask()
            for key, value in owner_attrs().items():
                study._storage.set_trial_system_attr(trial._trial_id, key, value)
        if _surplus(study, trial, ctx.target):
            trial.set_user_attr("error", "skipped: the study already had its trials")
            study.tell(trial, state=_fail())
            return "others running"
        state = _run_trial(study, trial, ctx, space)
        failures = [*failures, trial.user_attrs.get("error", "")] if state == "FAIL" else []
        with folder_lock(ctx.study_dir / STUDY_LOCK):
            from seglab.study.report import write_results  # lazy: torch (see run_study)

            write_results(study, ctx)
        if len(failures) >= MAX_FAILURES_IN_A_ROW:
            raise SeglabError(
                f"{len(failures)} trials failed in a row, stopping the study; last error: "
                f"{failures[-1]}"
            )


def _fail() -> Any:
    from optuna.trial import TrialState  # lazy: the optional `search` extra

    return TrialState.FAIL


def _surplus(study: Any, trial: Any, target: int) -> bool:
    """True when workers on other machines already hold the remaining trials (or grid points)."""
    from optuna.trial import TrialState  # lazy: the optional `search` extra

    from seglab.study.sampling import EXHAUSTED_ATTR  # lazy: imports Optuna (an extra)

    if study._storage.get_trial(trial._trial_id).system_attrs.get(EXHAUSTED_ATTR):
        return True
    earlier = [
        t for t in study.get_trials(deepcopy=False)
        if t.number < trial.number
        and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    ]  # fmt: skip
    return len(earlier) >= target


def trial_recipe(spec: StudySpec, base: dict[str, Any], values: dict[str, Any],
                 number: int) -> Recipe:  # fmt: skip
    """The recipe of trial ``number``: base + the trial's values, quiet, with the trial budget."""

    data = apply_values(base, values)
    data["name"] = f"{spec.name}-trial{number}"
    trainer = data.setdefault("trainer", {})
    trainer["progress"] = False  # the study prints one line per epoch instead
    if spec.trial_minutes:
        trainer["max_minutes"] = spec.trial_minutes
    return Recipe.from_dict(data, source=f"trial {number}")


def _run_trial(study: Any, trial: Any, ctx: _Context, space: Any) -> str:
    # lazy: the engine loads torch and Lightning (about 10 s on a loaded 2-core machine)
    import optuna

    from seglab.engine import fit
    from seglab.study.pruning import TrialReporter

    spec = ctx.spec
    number = trial.number
    started = time.monotonic()
    run_dir = ctx.study_dir / TRIALS_DIR / str(number)
    objectives = spec.objectives
    metric = objectives[0].metric if objectives[0].metric in EPOCH_METRICS else VAL_MIOU

    def on_epoch(epoch: int, value: float | None) -> None:
        shown = f"{value:.4f}" if value is not None else "not measured"
        ctx.progress(StudyEvent("epoch", f"  trial {number} epoch {epoch}: {metric} {shown}",
                                trial=number, data={"epoch": epoch, metric: value}))  # fmt: skip

    def finish(state: str, message: str, values: list[float] | None = None,
               epochs: int | None = None) -> str:
        trial.set_user_attr("time_s", round(time.monotonic() - started, 2))
        trial.set_user_attr("epochs", _epochs(run_dir) if epochs is None else epochs)
        if state == "FAIL":
            trial.set_user_attr("error", message)
        study.tell(trial, values, state=getattr(optuna.trial.TrialState, state))
        ctx.progress(StudyEvent("trial_end", f"trial {number} {state}: {message} "
                                f"({time.monotonic() - started:.0f} s)", trial=number,
                                data={"state": state, "values": values}))  # fmt: skip
        return state

    try:
        params, fixed = space.sample(trial)
        trial.set_user_attr("params", json_safe(params))
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        recipe = trial_recipe(spec, ctx.base, {**fixed, **params}, number)
        if spec.seeds > 1:  # the configuration's seed runs live in a folder of their own
            run_dir = config_dir(ctx.study_dir, recipe)
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
    except SeglabError as exc:
        return finish("FAIL", str(exc))
    ctx.progress(StudyEvent("trial_start", f"trial {number}: " + ", ".join(
        f"{k}={_short(v)}" for k, v in params.items()), trial=number, data={"params": params}))
    single = len(objectives) == 1
    reporter = TrialReporter(trial, metric, prune=spec.pruner.name != "none",
                             report=single and metric == objectives[0].metric, on_epoch=on_epoch)
    with Heartbeat(study._storage, trial._trial_id):
        try:
            wanted = [o.metric for o in objectives]
            epochs = None  # a seeded trial's: read from its seed 0 run
            if spec.seeds > 1:
                measured = _train_seeds(recipe, run_dir, ctx, number, reporter, wanted)
            else:
                result = fit(recipe, run_dir, callbacks=[reporter])
                measured = trial_metrics(result.metrics, result.history, result.model_dir,
                                         recipe, wanted)
                epochs = len(result.history)
            trial.set_user_attr("metrics", json_safe(measured))
            values = [measured.get(o.metric) for o in objectives]
            missing = [o.metric for o, v in zip(objectives, values, strict=True) if not _finite(v)]
            if missing:
                return finish("FAIL", f"objective {', '.join(missing)} was not measured "
                              "(does the recipe have a validation split?)")  # fmt: skip
        except optuna.TrialPruned as exc:
            trial.set_user_attr("metrics", json_safe(_history_metrics(_history(run_dir))))
            return finish("PRUNED", str(exc) or "pruned")
        except Exception as exc:  # a failed trial is recorded; the study goes on
            logging.getLogger(__name__).debug("trial %s failed", number, exc_info=True)
            return finish("FAIL", f"{type(exc).__name__}: {exc}")
        except Stopped as exc:  # SIGINT/SIGTERM: the trial is recorded, the study stops
            finish("FAIL", "stopped")
            where = exc.message.split(";")[0]
            raise Stopped(exc.signum, f"study {spec.name}: trial {number} {where}; run the same "
                          "`seglab study run` command again to continue the study") from None
        except BaseException:  # Ctrl-C / SystemExit: record it, then stop
            finish("FAIL", "interrupted")
            raise
    shown = ", ".join(f"{o.metric} {v:.4f}" for o, v in zip(objectives, values, strict=True))
    return finish("COMPLETE", shown, [float(v) for v in values], epochs)


def _train_seeds(recipe: Recipe, folder: Path, ctx: _Context, number: int, reporter: Any,
                 wanted: list[str]) -> dict[str, Any]:  # fmt: skip
    def on_seed(seed: int, reused: bool) -> None:
        what = "reusing its finished run" if reused else "training"
        ctx.progress(StudyEvent("note", f"  trial {number} seed {seed}/{ctx.spec.seeds}: {what}",
                                trial=number, data={"seed": seed, "reused": reused}))  # fmt: skip

    def measure(run: Path, seeded: Recipe, fitted: Any) -> dict[str, Any]:
        if fitted is None:  # a finished seed run reused: its folder holds the scores
            return folder_metrics(run, seeded, wanted)
        return trial_metrics(fitted.metrics, fitted.history, fitted.model_dir, seeded, wanted)

    return train_seeds(recipe, folder, ctx.spec.seeds, measure, [reporter], on_seed)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _epochs(run_dir: Path) -> int:
    return len(_history(run_dir))


def _history(run_dir: Path) -> list[dict[str, Any]]:
    """The history of a trial's run folder, or of its seed 0 run when it trained several
    seeds (a trial stopped or pruned before ``fit`` returned leaves only its files)."""
    run = run_dir / "seed0" if (run_dir / "seed0").is_dir() else run_dir
    return read_history(run)


def _history_metrics(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``val_*`` at the best epoch (highest val mIoU) and the training time so far."""
    rows = [r for r in history if _finite(r.get(VAL_MIOU))]
    out: dict[str, Any] = {"epochs": len(history)}
    if history:
        out["train_time_s"] = history[-1].get("time_s")
    if rows:
        best = max(rows, key=lambda r: r[VAL_MIOU])
        out.update({key: best.get(key) for key in EPOCH_METRICS})
        out["best_epoch"] = best["epoch"]
    return out


def folder_metrics(run_dir: Path, recipe: Recipe, wanted: list[str]) -> dict[str, Any]:
    """:func:`trial_metrics` of a finished run folder (a seed run, trained or reused)."""
    return trial_metrics(read_metrics(run_dir), read_history(run_dir), model_dir(run_dir),
                         recipe, wanted)


def trial_metrics(metrics: dict[str, Any], history: Sequence[dict[str, Any]], model: Path,
                  recipe: Recipe, wanted: list[str]) -> dict[str, Any]:
    """A finished trial's scores: val_* at its best epoch (``history``), the scalars of its
    ``metrics`` document and (when an objective needs them) latency/params/GFLOPs of its
    ``model`` folder, benchmarked on CPU at batch 1."""
    out = _history_metrics(history)
    out.update({key: metrics[key] for key in run_metrics() if _finite(metrics.get(key))})
    out["split"] = metrics.get("split")
    if set(wanted) & set(BENCH_METRICS):
        # lazy: the bench and the model loader load torch (2.6 s, see run_study)
        from seglab.artifacts.pretrained import from_pretrained
        from seglab.bench import benchmark

        loaded, _config = from_pretrained(model)
        size = recipe.augment.eval_resize or recipe.augment.crop_size or (256, 256)
        figures = benchmark(loaded, tuple(size), device="cpu", warmup=2, repeats=5)
        out.update({key: figures.get(key) for key in BENCH_METRICS})
        out["bench_input"] = list(size)
    return out
