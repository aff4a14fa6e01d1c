"""The study report's static figures (matplotlib, Agg) from a results document.

Optimisation history (or the Pareto front for two objectives), per-epoch curves with the
pruned trials marked, parameter importances, slice plots and parallel coordinates. Each
function returns PNG bytes, or None when the study has nothing to draw yet.
"""

from __future__ import annotations

import json
import math
from typing import Any

from matplotlib.ticker import MaxNLocator

from seglab.report.plots import plt, to_png

COMPLETE_COLOR = "#2f6fdf"
PRUNED_COLOR = "#d1495b"
BEST_COLOR = "#1f9d55"


def _label(objective: dict[str, Any]) -> str:
    return f"{objective['metric']} ({objective['direction']})"


def _scored(results: dict[str, Any], states: tuple[str, ...] = ("COMPLETE",)) -> list[dict]:
    """Trials in ``states`` with a finite (first) objective value."""
    out = []
    for record in results["trials"]:
        value = record.get("value") if "value" in record else (record.get("values") or [None])[0]
        if record["state"] in states and _finite(value):
            out.append(record)
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _first(record: dict[str, Any]) -> float:
    return record["value"] if "value" in record else record["values"][0]


def history_plot(results: dict[str, Any]) -> bytes | None:
    """Objective per trial number, best-so-far line; pruned trials at their last value."""
    objective = results["objectives"][0]
    complete = sorted(_scored(results), key=lambda r: r["number"])
    pruned = _scored(results, ("PRUNED",))
    if not complete and not pruned:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.scatter([r["number"] for r in complete], [_first(r) for r in complete], s=45,
               color=COMPLETE_COLOR, edgecolor="black", zorder=3, label="complete")  # fmt: skip
    if pruned:
        ax.scatter([r["number"] for r in pruned], [_first(r) for r in pruned], s=45, marker="X",
                   color=PRUNED_COLOR, zorder=3,
                   label="pruned (value at its last epoch)")  # fmt: skip
    if complete:
        pick = max if objective["direction"] == "maximize" else min
        xs, ys, best = [], [], None
        for record in complete:
            best = _first(record) if best is None else pick(best, _first(record))
            xs.append(record["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", color=BEST_COLOR, linewidth=1.6, label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(_label(objective))
    ax.set_title("Optimisation history")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return to_png(fig)


def pareto_plot(results: dict[str, Any]) -> bytes | None:
    """Two objectives against each other, the Pareto-optimal trials highlighted."""
    if len(results["objectives"]) != 2:
        return None
    complete = [r for r in results["trials"] if r["state"] == "COMPLETE" and r.get("values")]
    if not complete:
        return None
    front = set(results.get("pareto") or [])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for record in complete:
        on = record["number"] in front
        ax.scatter(*record["values"], s=70 if on else 40, zorder=3,
                   color=BEST_COLOR if on else "#9aa5b5", edgecolor="black")  # fmt: skip
        ax.annotate(str(record["number"]), record["values"], textcoords="offset points",
                    xytext=(5, 4), fontsize=8)  # fmt: skip
    first, second = results["objectives"]
    ax.set_xlabel(_label(first))
    ax.set_ylabel(_label(second))
    ax.set_title("Pareto front (green: no trial is better on both objectives)")
    ax.grid(True, alpha=0.3)
    return to_png(fig)


def intermediate_plot(results: dict[str, Any]) -> bytes | None:
    """Per-epoch objective of every trial: complete solid, pruned dashed ending in a cross."""
    trials = [r for r in results["trials"] if r.get("intermediate")]
    if not trials:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for record in trials:
        steps = [int(s) for s in record["intermediate"]]
        values = list(record["intermediate"].values())
        pruned = record["state"] == "PRUNED"
        color = PRUNED_COLOR if pruned else COMPLETE_COLOR
        ax.plot(steps, values, linestyle="--" if pruned else "-", marker="o", markersize=3,
                color=color, alpha=0.8, linewidth=1.2)  # fmt: skip
        if pruned:
            ax.scatter(steps[-1], values[-1], marker="X", s=60, color=PRUNED_COLOR, zorder=3)
        # Each line names its trial at its end, so a line can be found in the table.
        ax.annotate(f"trial {record['number']}", (steps[-1], values[-1]),
                    textcoords="offset points", xytext=(5, 0), fontsize=7, color=color,
                    va="center")  # fmt: skip
    ax.plot([], [], color=COMPLETE_COLOR, label="complete")
    ax.plot([], [], color=PRUNED_COLOR, linestyle="--", label="pruned (x: where it stopped)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(results["objectives"][0]["metric"])
    ax.set_title("Per-epoch validation score of each trial (what the pruner sees)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return to_png(fig)


def importance_plot(results: dict[str, Any]) -> bytes | None:
    """fANOVA importance of each parameter as horizontal bars."""
    scores = results.get("importances")
    if not scores:
        return None
    names = list(scores)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.4))
    ax.barh(names, [scores[n] for n in names], color=COMPLETE_COLOR)
    for y, name in enumerate(names):
        ax.text(scores[name], y, f" {scores[name]:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (share of the objective's variance, fANOVA)")
    ax.set_xlim(0, max(1.0, max(scores.values()) * 1.15))
    ax.set_title("Parameter importances")
    return to_png(fig)


def _axis_values(records: list[dict], key: str) -> tuple[list[float], list[str] | None, bool]:
    """Numeric positions for ``key`` (categories become 0..n-1 with labels); log-scale flag."""
    raw = [r["params"].get(key) for r in records]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        positive = all(v > 0 for v in raw)
        wide = positive and max(raw) / max(min(raw), 1e-300) > 50
        return [float(v) for v in raw], None, wide
    labels = list(dict.fromkeys(v if isinstance(v, str) else json.dumps(v) for v in raw))
    index = {label: i for i, label in enumerate(labels)}
    return [index[v if isinstance(v, str) else json.dumps(v)] for v in raw], labels, False


def slice_plot(results: dict[str, Any]) -> bytes | None:
    """Objective against each parameter (one panel per parameter), coloured by trial number."""
    records = _scored(results)
    keys = list(dict.fromkeys(k for r in records for k in r["params"]))
    if not records or not keys:
        return None
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    numbers = [r["number"] for r in records]
    for ax, key in zip(axes.flat, keys, strict=False):
        subset = [r for r in records if key in r["params"]]
        xs, labels, log = _axis_values(subset, key)
        points = ax.scatter(xs, [_first(r) for r in subset], c=[r["number"] for r in subset],
                            cmap="viridis", vmin=min(numbers), vmax=max(numbers) or 1,
                            edgecolor="black", s=40)  # fmt: skip
        if labels:
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        if log:
            ax.set_xscale("log")
        ax.set_title(key, fontsize=10)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.colorbar(points, ax=axes.ravel().tolist(), shrink=0.8, label="trial")
    fig.suptitle(f"Slices: {results['objectives'][0]['metric']} against each parameter "
                 "(complete trials)")  # fmt: skip
    return to_png(fig)


def parallel_plot(results: dict[str, Any]) -> bytes | None:
    """Parallel coordinates: one vertical axis per parameter and the objective, one line per
    complete trial coloured by its objective (categorical axes evenly spaced)."""
    records = _scored(results)
    keys = [k for k in dict.fromkeys(k for r in records for k in r["params"])
            if all(k in r["params"] for r in records)]  # fmt: skip
    if len(records) < 2 or not keys:
        return None
    axes_data = []
    for key in keys:
        xs, labels, log = _axis_values(records, key)
        if log:
            xs = [math.log10(x) for x in xs]
        axes_data.append((key, xs, labels, log))
    objective = [_first(r) for r in records]
    axes_data.append((results["objectives"][0]["metric"], objective, None, False))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.9 * len(axes_data)), 4.6))
    cmap = plt.get_cmap("viridis")
    low, high = min(objective), max(objective)
    scaled = []
    for _key, xs, _labels, _log in axes_data:
        lo, hi = min(xs), max(xs)
        scaled.append([(x - lo) / (hi - lo) if hi > lo else 0.5 for x in xs])
    maximize = results["objectives"][0]["direction"] == "maximize"
    for i, value in sorted(enumerate(objective), key=lambda p: p[1] if maximize else -p[1]):
        shade = (value - low) / (high - low) if high > low else 1.0
        ax.plot(range(len(axes_data)), [s[i] for s in scaled], color=cmap(shade if maximize
                else 1 - shade), alpha=0.85, linewidth=1.5)  # fmt: skip
    for j, (_key, xs, labels, log) in enumerate(axes_data):
        ax.axvline(j, color="#555", linewidth=0.8)
        lo, hi = min(xs), max(xs)
        ticks = labels if labels else [f"{10**lo:.2g}" if log else f"{lo:.3g}",
                                       f"{10**hi:.2g}" if log else f"{hi:.3g}"]  # fmt: skip
        positions = ([i / max(1, len(labels) - 1) if len(labels) > 1 else 0.5
                      for i in range(len(labels))] if labels else [0, 1])  # fmt: skip
        for pos, text in zip(positions, ticks, strict=True):
            ax.text(j + 0.04, pos, text, fontsize=7.5, va="center")
    ax.set_xticks(range(len(axes_data)), [a[0] for a in axes_data], rotation=15, fontsize=9)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes_data) - 0.6)
    ax.set_title("Parallel coordinates (brighter = better objective)")
    return to_png(fig)
