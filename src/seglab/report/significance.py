"""The report's statistics: paired differences in mIoU, ranking groups, per-image scores."""

from __future__ import annotations

from typing import Any

import numpy as np

from seglab.metrics import MIOU
from seglab.report.plots import model_colors, plt, to_png
from seglab.report.runs import ModelResult
from seglab.report.tables import markdown_table


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def pair_rows(significance: dict[str, Any]) -> list[list[str]]:
    """``[A - B, difference, interval, p (bootstrap), p (permutation), verdict]`` per pair."""
    rows = []
    for pair in significance["pairs"]:
        low, high = pair["interval"]
        rows.append([
            f"{pair['a']} - {pair['b']}",
            _points(pair["difference"]),
            f"[{_points(low)}, {_points(high)}]",
            f"< {1 / significance['resamples']:.2g}" if pair["p_bootstrap"] == 0
            else f"{pair['p_bootstrap']:.3g}",
            f"{pair['p_permutation']:.3g}",
            pair.get("verdict") or ("significant" if pair["significant"] else "not significant"),
        ])
    return rows


HEADER = ["pair", "mIoU difference (points)", "interval", "p (bootstrap)", "p (permutation)",
          "verdict"]


def significance_context(significance: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the HTML template shows, or None without a significance table."""
    if not significance:
        return None
    return {
        "header": HEADER,
        "rows": pair_rows(significance),
        "ranking": significance["ranking"],
        "method": significance["method"],
        "level": int(round(100 * significance["level"])),
        "num_images": significance["num_images"],
        "left_out": significance.get("left_out") or [],
    }


def significance_markdown(significance: dict[str, Any] | None) -> str:
    """The report.md section (empty without a significance table)."""
    if not significance:
        return ""
    level = int(round(100 * significance["level"]))
    lines = [
        "",
        "## Which differences are real",
        "",
        f"Ranking (models in braces are not distinguishable at {level}%): "
        f"**{significance['ranking']}**",
        "",
        markdown_table(HEADER, pair_rows(significance)),
        "",
        f"{significance['method']} ({significance['num_images']} images.)",
    ]
    if significance.get("left_out"):
        lines += ["", "Left out (no per-image counts): " + ", ".join(significance["left_out"])]
    return "\n".join(lines) + "\n"


WORST_IMAGES = 3


def worst_images(results: list[ModelResult], k: int = WORST_IMAGES) -> list[dict[str, Any]]:
    """Each model's ``k`` lowest per-image mIoU: image name, mIoU, its worst class."""
    rows = []
    for result in results:
        if result.per_image is None:
            continue
        table = [r for r in result.per_image.table() if r[MIOU] == r[MIOU]]
        table.sort(key=lambda r: r[MIOU])
        rows.append({
            "label": result.label,
            "images": [
                {"image": r["image"], MIOU: f"{100 * r[MIOU]:.1f}",
                 "worst": f"{r['worst_class']} {100 * r['worst_iou']:.1f}"}
                for r in table[:k]
            ],
        })
    return rows


def per_image_plot(results: list[ModelResult]) -> bytes | None:
    """Box plot of each model's per-image mIoU (points over it); None without counts."""
    usable = [r for r in results if r.per_image is not None]
    if not usable:
        return None
    colors = model_colors([r.label for r in results])
    values = [100 * r.per_image.image_scores()[MIOU] for r in usable]
    values = [v[np.isfinite(v)] for v in values]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(usable) + 1.6))
    ax.boxplot(values, vert=False, widths=0.5, showfliers=False)
    jitter = np.random.default_rng(0)
    for i, (result, v) in enumerate(zip(usable, values, strict=True), start=1):
        ax.scatter(v, i + jitter.uniform(-0.15, 0.15, v.size), s=8, alpha=0.5,
                   color=colors[result.label])
    ax.set_yticks(range(1, len(usable) + 1), [r.label for r in usable])
    ax.set_xlabel("mIoU of each image (%)")
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def markdown_worst(rows: list[dict[str, Any]]) -> str:
    """The worst images per model as Markdown (empty without per-image counts)."""
    if not rows:
        return ""
    lines = ["", "## Hardest images", ""]
    for row in rows:
        listed = "; ".join(f"{i['image']} ({i['miou']}, worst {i['worst']})"
                           for i in row["images"])
        lines.append(f"- **{row['label']}**: {listed}")
    return "\n".join(lines) + "\n"
