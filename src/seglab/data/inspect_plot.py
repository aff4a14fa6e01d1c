"""The ``seglab data inspect --plot`` figure: class pixel shares and the image-size histogram.

Drawn from the inspection document (:func:`seglab.data.inspect.inspect_source`), so the figure
and the printed table can never disagree. Bars take the classes' own colours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display; set before pyplot loads
import matplotlib.pyplot as plt  # noqa: E402

from seglab.errors import ConfigError
from seglab.io_utils import atomic_path

SIZES_SHOWN = 12  # the most common image sizes; the rest are summed into one bar


def plot_inspection(doc: dict[str, Any], path: str | Path) -> Path:
    """Write the figure for an inspection document to ``path`` (PNG, PDF or SVG by suffix)."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"--plot {path}: give a .png, .pdf or .svg file name")
    classes = doc["classes"]
    height = max(3.0, 0.28 * len(classes) + 1.2)
    fig, (shares, sizes) = plt.subplots(
        1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [3, 2]}
    )
    names = [row["name"] for row in classes]
    values = [row["share"] * 100 for row in classes]
    colors = [tuple(c / 255 for c in row["color"]) for row in classes]
    positions = range(len(classes))
    shares.barh(positions, values, color=colors, edgecolor="black", linewidth=0.4)
    shares.set_yticks(list(positions), names)
    shares.invert_yaxis()  # class 0 on top, like the table
    shares.set_xlabel("% of labelled pixels")
    shares.set_title(
        f"{doc['split']}: {doc['num_classes']} classes, ignore "
        f"{doc['ignore_share'] * 100:.1f}% of pixels"
    )
    for y, value in zip(positions, values, strict=True):
        shares.text(value, y, f" {value:.2f}", va="center", fontsize=7)

    rows = doc["image_sizes"]
    labels = [f"{r['height']}x{r['width']}" for r in rows[:SIZES_SHOWN]]
    counts = [r["count"] for r in rows[:SIZES_SHOWN]]
    if len(rows) > SIZES_SHOWN:
        labels.append(f"{len(rows) - SIZES_SHOWN} other sizes")
        counts.append(sum(r["count"] for r in rows[SIZES_SHOWN:]))
    sizes.bar(range(len(counts)), counts, color="#4c72b0")
    sizes.set_xticks(range(len(counts)), labels, rotation=45, ha="right")
    sizes.set_ylabel("images (all splits)")
    sizes.set_title("image sizes (HxW)")
    fig.suptitle(doc["spec"])
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:].lower(), dpi=110, facecolor="white")
    except OSError as exc:
        raise ConfigError(f"cannot write the inspection figure {path}: {exc}") from exc
    finally:
        plt.close(fig)
    return path
