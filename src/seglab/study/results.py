"""The study's results document (``results.json``), read back by ``study show`` / ``best``.

``{"name", "objectives", "target", "counts", "trials": [{"number", "state" (COMPLETE /
PRUNED / FAIL / RUNNING), "params", "value" (one objective) or "values" (two), "run_dir",
"time_s", "epochs", "metrics", "intermediate", "error"}, ...], "best": {...}, "pareto",
"importances", "pruning", "grid_tables", "updated"}``. Trials are sorted best first.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from pathlib import Path
from typing import Any

from seglab.errors import ConfigError
from seglab.io_utils import json_safe
from seglab.metrics import VAL_LOSS

RESULTS_FILE = "results.json"
BEST_RECIPE_FILE = "best_recipe.yaml"
_STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}


def build_results(study: Any, spec: Any, target: int, url: str) -> dict[str, Any]:
    """The results document of ``study`` (an Optuna study) created from ``spec``."""
    objectives = [o.model_dump() for o in spec.objectives]
    single = len(objectives) == 1
    records = [_record(t, single) for t in study.get_trials(deepcopy=False)]
    records = [r for r in records if not r.get("skipped")]
    records.sort(key=lambda r: _sort_key(r, objectives))
    counts = {state: sum(r["state"] == state for r in records) for state in _STATE_ORDER}
    pareto = _pareto(study, single)
    best = next((r for r in records if r["state"] == "COMPLETE"), None)
    if not single and pareto:
        best = next(r for r in records if r["number"] in pareto)
    return json_safe({
        "name": spec.name,
        "objectives": objectives,
        "sampler": spec.sampler.name,
        "pruner": spec.pruner.name,
        "storage": url,
        "target": target,
        "counts": counts,
        "finished": counts["COMPLETE"] + counts["PRUNED"],
        "trials": records,
        "best": best,
        "pareto": pareto,
        "importances": _importances(study, single),
        "pruning": pruning_summary(records),
        "grid_tables": grid_tables(records, objectives[0]) if spec.grid else [],
        "space": spec.space,
        "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })  # fmt: skip


def _record(trial: Any, single: bool) -> dict[str, Any]:
    attrs = trial.user_attrs
    time_s = attrs.get("time_s")
    if time_s is None and trial.datetime_start is not None:
        end = trial.datetime_complete or dt.datetime.now()
        time_s = round((end - trial.datetime_start).total_seconds(), 2)
    record: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "params": attrs.get("params", {}),
        "run_dir": attrs.get("run_dir"),
        "time_s": time_s,
        "epochs": attrs.get("epochs"),
        "metrics": attrs.get("metrics", {}),
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
    }
    if single:
        record["value"] = trial.value if trial.values else None
    else:
        record["values"] = list(trial.values) if trial.values else None
    if "error" in attrs:
        record["error"] = attrs["error"]
        record["skipped"] = str(attrs["error"]).startswith("skipped:")
    return record


def _sort_key(record: dict[str, Any], objectives: list[dict[str, Any]]) -> tuple:
    value = record.get("value")
    if value is None and record.get("values"):
        value = record["values"][0]
    rank = _STATE_ORDER.get(record["state"], 5)
    if value is None or not math.isfinite(value):
        return (rank, 1, 0.0, record["number"])
    sign = -1.0 if objectives[0]["direction"] == "maximize" else 1.0
    return (rank, 0, sign * value, record["number"])


def _pareto(study: Any, single: bool) -> list[int]:
    if single:
        return []
    try:
        return sorted(t.number for t in study.best_trials)
    except (ValueError, RuntimeError):
        return []


def _importances(study: Any, single: bool) -> dict[str, float] | None:
    """fANOVA importances of the parameters every complete trial shares; None with < 3 trials."""
    # lazy: optuna adds 0.43 s (measured, loaded 2-core machine) to `seglab study show`
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 3:
        return None
    target = None if single else (lambda t: t.values[0])
    try:
        scores = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0), target=target
        )
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None  # e.g. no parameter varies across the complete trials
    return {name: float(score) for name, score in scores.items()}


def pruning_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How many trials were pruned, and an estimate of the training time that saved."""
    complete = [r for r in records if r["state"] == "COMPLETE" and r.get("epochs")]
    pruned = [r for r in records if r["state"] == "PRUNED" and r.get("epochs")]
    pruned_time = round(sum(r["time_s"] or 0 for r in pruned), 1)
    summary: dict[str, Any] = {"pruned": len(pruned), "estimated_saved_s": None,
                               "pruned_time_s": pruned_time}  # fmt: skip
    if not complete or not pruned:
        return summary
    full = statistics.median(r["epochs"] for r in complete)
    saved = 0.0
    for record in pruned:
        per_epoch = (record["time_s"] or 0) / record["epochs"]
        saved += max(0.0, full - record["epochs"]) * per_epoch
    summary.update(
        estimated_saved_s=round(saved, 1),
        complete_median_epochs=full,
        total_time_s=round(sum(r["time_s"] or 0 for r in records), 1),
        method="each pruned trial's epochs short of the complete trials' median epoch count, "
        "times its own mean time per epoch (the final evaluation it skipped is not counted)",
    )
    return summary


def grid_tables(records: list[dict[str, Any]], objective: dict[str, Any]) -> list[dict]:
    """Pivot tables of a sweep: for each pair of searched fields, rows x columns -> the best
    objective over the other fields (with val loss beside it), like the seeds' tables."""
    done = sorted(
        (r for r in records if r["state"] in ("COMPLETE", "PRUNED") and r.get("value") is not None),
        key=lambda r: r["number"],  # rows and columns in the sweep's order
    )
    keys = list(dict.fromkeys(k for r in done for k in r["params"]))
    varying = [k for k in keys if len({json.dumps(r["params"].get(k)) for r in done}) > 1]
    pairs = [(a, b) for i, a in enumerate(varying) for b in varying[i + 1 :]]
    if len(varying) == 1:
        pairs = [(varying[0], None)]
    maximize = objective["direction"] == "maximize"
    tables = []
    for a, b in pairs:
        rows = _values(done, a)
        cols = _values(done, b) if b else [None]
        if b and len(cols) > len(rows):
            a, b, rows, cols = b, a, cols, rows
        cells = []
        for row in rows:
            line = []
            for col in cols:
                hits = [r for r in done if _text(r["params"].get(a)) == row
                        and (b is None or _text(r["params"].get(b)) == col)]  # fmt: skip
                if not hits:
                    line.append(None)
                    continue
                pick = (max if maximize else min)(hits, key=lambda r: r["value"])
                line.append({"value": pick["value"], "state": pick["state"],
                             VAL_LOSS: (pick.get("metrics") or {}).get(VAL_LOSS),
                             "trial": pick["number"], "n": len(hits)})  # fmt: skip
            cells.append(line)
        tables.append({"rows": a, "cols": b, "row_values": rows, "col_values": cols,
                       "cells": cells, "metric": objective["metric"],
                       "direction": objective["direction"]})  # fmt: skip
    return tables


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _values(records: list[dict[str, Any]], key: str) -> list[str]:
    return list(dict.fromkeys(_text(r["params"].get(key)) for r in records if key in r["params"]))


def study_dir_of(name_or_dir: str | Path, root: str | Path = "studies") -> Path:
    """A study folder from its name (under ``root``) or its path."""
    path = Path(name_or_dir).expanduser()
    for candidate in (path, Path(root) / str(name_or_dir)):
        if (candidate / RESULTS_FILE).is_file() or (candidate / "study.json").is_file():
            return candidate
    raise ConfigError(
        f"no study {str(name_or_dir)!r}: neither {path} nor {Path(root) / str(name_or_dir)} holds "
        "a study (results.json / study.json)"
    )


def load_results(name_or_dir: str | Path, root: str | Path = "studies") -> dict[str, Any]:
    """The ``results.json`` of a study (by name under ``root``, or its folder)."""
    folder = study_dir_of(name_or_dir, root)
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: no trial has finished yet (no {RESULTS_FILE})")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    doc["study_dir"] = str(folder)
    return doc


def best_recipe_path(name_or_dir: str | Path, root: str | Path = "studies") -> Path:
    """The study's ``best_recipe.yaml`` (an error when no trial has completed)."""
    folder = study_dir_of(name_or_dir, root)
    path = folder / BEST_RECIPE_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: no trial has completed yet (no {BEST_RECIPE_FILE})")
    return path
