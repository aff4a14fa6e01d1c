"""Write a study's files: ``results.json``, ``best_recipe.yaml``, ``report.html``, ``figures/``.

The caller holds the study folder's lock (several workers may finish at once); every file is
written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
from pathlib import Path
from typing import Any

import yaml

from seglab import __version__
from seglab.artifacts.rundir import read_recipe
from seglab.config import DATA_ROOT_VAR
from seglab.io_utils import atomic_write_text, json_safe
from seglab.metrics import VAL_LOSS
from seglab.paths import data_root
from seglab.report.html import data_uri
from seglab.report.tables import format_duration
from seglab.study import figures
from seglab.study.page import render_study_page
from seglab.study.results import BEST_RECIPE_FILE, RESULTS_FILE, build_results
from seglab.study.seeded import seed_text
from seglab.study.storage import hide_password
from seglab.units import score_text

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
# id, title, file, function, note
_FIGURES = (
    ("history", "Optimisation history", "history.png", figures.history_plot,
     "Each complete trial's objective; pruned trials at the value where they stopped."),
    ("pareto", "Pareto front", "pareto.png", figures.pareto_plot, ""),
    ("curves", "Per-epoch scores", "intermediate.png", figures.intermediate_plot,
     "The values reported to the pruner after every validated epoch."),
    ("importances", "Parameter importances", "importances.png", figures.importance_plot,
     "fANOVA over the complete trials, for the parameters every complete trial has "
     "(per-choice parameters are left out); with few trials this is a rough guide."),
    ("slices", "Slice plots", "slices.png", figures.slice_plot, ""),
    ("parallel", "Parallel coordinates", "parallel.png", figures.parallel_plot,
     "Parameters every complete trial has, and the objective; one line per trial."),
)  # fmt: skip


def write_results(study: Any, ctx: Any) -> dict[str, Any]:
    """Rewrite ``results.json`` and ``best_recipe.yaml`` from the storage; returns the doc."""
    results = build_results(study, ctx.spec, ctx.target, hide_password(ctx.url))
    folder = Path(ctx.study_dir)
    atomic_write_text(folder / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
    best = results.get("best")
    if best and best.get("run_dir"):
        recipe = _best_recipe(best, ctx.spec.name)
        if recipe is not None:
            atomic_write_text(folder / BEST_RECIPE_FILE, recipe)
    return results


def _best_recipe(best: dict[str, Any], study_name: str) -> str | None:
    """The best trial's resolved recipe as YAML, renamed for training it again."""
    run_dir = Path(best["run_dir"])
    if (run_dir / "seed0").is_dir():  # several seeds: seed 0's recipe, its seed as the base's
        run_dir = run_dir / "seed0"
    recipe = read_recipe(run_dir)
    if recipe is None:
        return None
    recipe["name"] = f"{study_name}-best"
    recipe.setdefault("trainer", {})["progress"] = True
    data = recipe.get("data") or {}
    if isinstance(data.get("spec"), str):
        data["spec"] = portable_data_spec(data["spec"], data_root())
    values = best.get("value", best.get("values"))
    header = (
        f"# Best trial {best['number']} of study {study_name} ({values}); params: "
        f"{json.dumps(best['params'])}\n"
    )
    return header + yaml.safe_dump(recipe, sort_keys=False)


def portable_data_spec(spec: str, root: Path | None) -> str:
    """``format:path`` with a path under the real-data ``root`` written as
    ``${SEGLAB_DATA}/...`` (as the shipped recipes do), so the recipe works on other machines."""
    kind, sep, path = spec.partition(":")
    if not sep or root is None or DATA_ROOT_VAR in path:
        return spec
    try:
        inside = Path(path).expanduser().resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError):
        return spec
    tail = "" if inside == Path(".") else f"/{inside.as_posix()}"
    return f"{kind}:{DATA_ROOT_VAR}{tail}"


def train_command(best_path: Path) -> str:
    """The command that trains a study's best recipe again (printed and in the report)."""
    return f"seglab train {shlex.quote(str(best_path))}"


def write_report(study: Any, ctx: Any, results: dict[str, Any]) -> dict[str, Path]:
    """Render ``report.html`` (self-contained) and ``figures/*.png``; returns the paths."""
    folder = Path(ctx.study_dir)
    shown = []
    paths = {"results": folder / RESULTS_FILE, "report": folder / REPORT_FILE}
    for fig_id, title, name, draw, note in _FIGURES:
        png = draw(results)
        if png is None:
            continue
        path = folder / FIGURES_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(png)
        tmp.replace(path)
        paths[fig_id] = path
        shown.append({"id": fig_id, "title": title, "uri": data_uri(png), "note": note})
    best_path = folder / BEST_RECIPE_FILE
    context = page_context(results, ctx.spec, shown, best_path)
    atomic_write_text(paths["report"], render_study_page(context))
    if best_path.is_file():
        paths["best_recipe"] = best_path
    return paths


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}"
    return value if isinstance(value, str) else json.dumps(value)


def page_context(results: dict[str, Any], spec: Any, shown: list[dict], best_path: Path) -> dict:
    """Everything the page template shows, as plain text values."""
    objectives = results["objectives"]
    keys = list(dict.fromkeys(k for t in results["trials"] for k in t["params"]))
    best = results.get("best") or {}
    pareto = set(results.get("pareto") or [])
    rows = []
    for trial in results["trials"]:
        values = [trial.get("value")] if "value" in trial else (trial.get("values") or [None] * 2)
        rows.append({
            "number": trial["number"], "state": trial["state"],
            "best": trial["number"] == best.get("number"), "pareto": trial["number"] in pareto,
            "scores": [score_text(o["metric"], v) if v is not None else "–"
                       for o, v in zip(objectives, values, strict=False)],
            "seeds": [seed_text((trial.get("metrics") or {}).get("seed_summary"), o["metric"])
                      for o in objectives],
            "params": [_fmt(trial["params"].get(k)) if k in trial["params"] else "" for k in keys],
            "epochs": _fmt(trial.get("epochs")),
            "time": f"{trial['time_s']:.0f}" if trial.get("time_s") is not None else "–",
            "run_dir": _relative(trial.get("run_dir"), best_path.parent),
            "error": trial.get("error", ""),
        })  # fmt: skip
    counts = results["counts"]
    pruning = results.get("pruning") or {}
    saved = pruning.get("estimated_saved_s")
    total = sum(t.get("time_s") or 0 for t in results["trials"])
    cards = [
        {"key": "trials finished", "value": f"{results['finished']} / {results['target']}",
         "sub": f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
                f"{counts['FAIL']} failed, {counts['RUNNING']} running"},
        {"key": f"best {objectives[0]['metric']}",
         "value": score_text(objectives[0]["metric"],
                             best.get("value", (best.get("values") or [None])[0])),
         "sub": f"trial {best['number']}" if best else "no complete trial yet"},
        {"key": "trial time", "value": format_duration(total), "sub": "sum over trials (wall)"},
        {"key": "saved by pruning", "value": format_duration(saved) if saved else "–",
         "sub": "estimate, see results.json" if saved else f"pruner: {results['pruner']}"},
    ]  # fmt: skip
    best_recipe = best_path.read_text() if best_path.is_file() else ""
    direction = ", ".join(f"{o['metric']} ({o['direction']})" for o in objectives)
    return {
        "title": f"Study {results['name']}",
        "subtitle": f"{direction}; sampler {results['sampler']}, pruner {results['pruner']}; "
        f"updated {results['updated']}",
        "cards": cards,
        "objectives": objectives,
        "param_keys": keys,
        "rows": rows,
        "table_note": "Complete trials sorted by the objective, then pruned (value at the epoch "
        "where they stopped), running and failed. Every run folder works with seglab eval, "
        "predict, export and compare (a pruned one through its checkpoints/best.ckpt).",
        "best_recipe": best_recipe,
        "best_label": f"trial {best.get('number')}" if best else "",
        "best_path": str(best_path),
        "best_command": train_command(best_path),
        "grid_tables": [_pivot(t) for t in results.get("grid_tables") or []],
        "figures": shown,
        "method": _method(results, spec),
        "space": [(key, _describe(value)) for key, value in (results.get("space") or {}).items()],
        "version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _relative(path: str | None, folder: Path) -> str:
    """A trial's run folder as written relative to the study folder when it lies inside."""
    if not path:
        return ""
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return path


def _pivot(table: dict[str, Any]) -> dict[str, Any]:
    metric = table["metric"]
    values = [c["value"] for line in table["cells"] for c in line if c]
    pick = max if table.get("direction", "maximize") == "maximize" else min
    top = pick(values) if values else None
    lines = []
    for label, line in zip(table["row_values"], table["cells"], strict=True):
        cells = []
        for cell in line:
            if cell is None:
                cells.append(None)
                continue
            sub = [f"trial {cell['trial']}" + (" (pruned)" if cell["state"] == "PRUNED" else "")]
            if cell.get(VAL_LOSS) is not None and metric != VAL_LOSS:
                sub.insert(0, f"val loss {cell['val_loss']:.3f}")
            cells.append({"text": _fmt(cell["value"]), "sub": ", ".join(sub),
                          "best": cell["value"] == top})  # fmt: skip
        lines.append((label, cells))
    title = f"{table['rows']} x {table['cols']} -> {metric}" if table["cols"] else (
        f"{table['rows']} -> {metric}")  # fmt: skip
    return {**table, "title": title, "lines": lines,
            "note": "Each cell: the best trial with those values over the other searched "
                    "fields (its val loss beside it); –: not in the sweep."}  # fmt: skip


def _describe(value: Any) -> str:
    return json.dumps(json_safe(value))


def _method(results: dict[str, Any], spec: Any) -> list[str]:
    lines = [
        f"Storage: {results['storage']}; trials requested: {results['target']} "
        "(complete + pruned trials count; failed ones are re-run).",
        f"Sampler {spec.sampler.name}, seed {spec.seed} (each trial seeded from seed + its "
        "number); objective values of val_* metrics are taken at each trial's best epoch "
        "(highest val mIoU, the checkpoint it keeps).",
    ]
    if spec.pruner.name != "none":
        pruning = results.get("pruning") or {}
        lines.append(
            f"Pruner {spec.pruner.name} on the per-epoch {results['objectives'][0]['metric']}; "
            f"{pruning.get('pruned', 0)} trials pruned"
            + (f", about {pruning['estimated_saved_s']:.0f} s of training saved "
               f"({pruning['method']})." if pruning.get("estimated_saved_s") else ".")
        )  # fmt: skip
    if getattr(spec, "seeds", 1) > 1:
        lines.append(f"Each configuration trains with {spec.seeds} seeds (trainer.seed 0.."
                     f"{spec.seeds - 1}; finished runs are reused): its score is the mean over "
                     "seeds, shown as mean ± std [95% t-interval of the mean]; the pruner "
                     "watches seed 0.")  # fmt: skip
    if spec.trial_minutes:
        lines.append(f"Each trial trains for at most {spec.trial_minutes:g} minutes (the "
                     "recipe's trainer.max_minutes; the schedule is fitted to it).")  # fmt: skip
    return lines
