"""Uncertainty from training: one configuration trained with several seeds, summarised.

The bootstrap over test images (:mod:`seglab.bootstrap`) says how much a score depends on
the images drawn; it cannot see how much it depends on the training seed (initialisation,
data order, augmentation draws). Training each configuration with seeds 0..N-1 and reporting
the mean, the sample standard deviation and a Student-t interval of the mean answers that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from seglab.metrics import MIOU, PIXEL_ACC

# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30; above, the normal 1.96.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def seed_label(label: str, seed: int) -> str:
    """The run folder / report label of one seed of a configuration."""
    return f"{label}-seed{seed}"


def seed_overrides(overrides: Sequence[str], seed: int) -> list[str]:
    """The shared recipe overrides with this run's ``trainer.seed`` last (so it wins)."""
    return [*overrides, f"trainer.seed={seed}"]


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std, min, max and the 95% t-interval of the mean of one score."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    half = (_T95[n - 2] if n - 1 <= len(_T95) else 1.96) * std / math.sqrt(n) if n > 1 else (
        float("nan"))
    return {"n": n, "mean": mean, "std": std, "min": min(values), "max": max(values),
            "interval": [mean - half, mean + half], "values": list(values)}


def seed_table(groups: dict[str, dict[int, dict[str, Any]]],
               keys: Sequence[str] = (MIOU, PIXEL_ACC)) -> dict[str, Any]:
    """``{configuration: {seed: metrics document}}`` -> per configuration and score the
    :func:`summarise` figures, plus a line of text for mIoU (``48.6 ± 0.9 (3 seeds)``)."""
    table: dict[str, Any] = {}
    for label, by_seed in groups.items():
        seeds = sorted(by_seed)
        row: dict[str, Any] = {"seeds": seeds}
        for key in keys:
            values = [float(by_seed[s][key]) for s in seeds
                      if isinstance(by_seed[s].get(key), (int, float))]
            if values:
                row[key] = summarise(values)
        if MIOU in row:
            m = row[MIOU]
            std = f" ± {100 * m['std']:.1f}" if m["n"] > 1 else ""
            interval = (f", 95% interval of the mean [{100 * m['interval'][0]:.1f}, "
                        f"{100 * m['interval'][1]:.1f}]" if m["n"] > 1 else "")
            row["text"] = f"{label}: mIoU {100 * m['mean']:.1f}{std} ({m['n']} seeds{interval})"
        table[label] = row
    return table
