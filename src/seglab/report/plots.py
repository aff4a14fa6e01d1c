"""The report's figures, rendered with matplotlib (Agg) to PNG bytes.

Every model keeps one colour across all figures so a reader can follow it by eye.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from seglab.metrics import MIOU, VAL_LOSS, VAL_MIOU, normalize_confusion  # noqa: E402
from seglab.report.runs import ModelResult  # noqa: E402
from seglab.report.tables import pareto_front  # noqa: E402

DPI = 110


def model_colors(labels: list[str]) -> dict[str, tuple[float, float, float, float]]:
    """One distinct colour per model label (tab10, then tab20 beyond ten models)."""
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def to_png(fig: Figure) -> bytes:
    """Render and close a figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def pareto_plot(results: list[ModelResult]) -> bytes | None:
    """mIoU against latency, the Pareto front drawn as a step line; None without latencies."""
    usable = [r for r in results if r.bench.get("latency_ms") and r.metrics.get(MIOU) is not None]
    if not usable:
        return None
    colors = model_colors([r.label for r in results])
    points = [(float(r.bench["latency_ms"]), 100 * float(r.metrics[MIOU])) for r in usable]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result, (x, y) in zip(usable, points, strict=True):
        ax.scatter(x, y, s=90, color=colors[result.label], edgecolor="black", zorder=3)
        interval = (result.metrics.get("ci") or {}).get(MIOU)
        if isinstance(interval, list) and len(interval) == 2 and None not in interval:
            # The bootstrap interval over the test images (seglab.bootstrap).
            ax.errorbar(x, y, yerr=[[y - 100 * interval[0]], [100 * interval[1] - y]],
                        color=colors[result.label], capsize=4, zorder=2)
        ax.annotate(result.label, (x, y), textcoords="offset points", xytext=(7, 5), fontsize=9)
    if len(front) > 1:
        xs = [points[i][0] for i in front]
        ys = [points[i][1] for i in front]
        ax.step(
            xs,
            ys,
            where="post",
            color="#555",
            linestyle="--",
            linewidth=1.2,
            label="Pareto front (faster or more accurate than all others)",
            zorder=2,
        )
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    xs_all = [p[0] for p in points]
    if max(xs_all) / max(min(xs_all), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(f"latency per image (ms){_bench_context(usable)}")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Accuracy vs speed: up and to the left is better")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15, y=0.15)
    return to_png(fig)


def _bench_context(results: list[ModelResult]) -> str:
    device = results[0].bench.get("device")
    shape = results[0].bench.get("input")
    parts = [str(p) for p in (device, shape) if p]
    return f", {', '.join(parts)}" if parts else ""


def per_class_plot(results: list[ModelResult], names: list[str]) -> bytes | None:
    """Grouped bars: IoU per class, one bar per model; None when no model has per-class scores."""
    scores = np.array([r.per_class_iou(names) for r in results], dtype=float) * 100
    if np.isnan(scores).all():
        return None
    colors = model_colors([r.label for r in results])
    n_models = len(results)
    width = 0.8 / n_models
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.55 * len(names) * max(2, n_models) / 2 + 2), 4.5))
    for i, result in enumerate(results):
        ax.bar(
            x + (i - (n_models - 1) / 2) * width,
            np.nan_to_num(scores[i]),
            width,
            label=result.label,
            color=colors[result.label],
            edgecolor="white",
            linewidth=0.5,
        )
    ax.set_xticks(
        x, names, rotation=35 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center"
    )
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title("IoU per class")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(
        fontsize=8,
        ncols=min(n_models, 4),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.22 if len(names) > 6 else -0.1),
        frameon=False,
    )
    return to_png(fig)


def _series(history: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in history:
        value = row.get(key, math.nan)
        if math.isfinite(value):
            xs.append(row.get("epoch", len(xs)))
            ys.append(value)
    return xs, ys


def curves_plot(results: list[ModelResult]) -> bytes | None:
    """Loss (train solid, val dashed) and val mIoU per epoch; None when no run has a history."""
    with_history = [r for r in results if r.history]
    if not with_history:
        return None
    colors = model_colors([r.label for r in results])
    fig, (loss_ax, miou_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for result in with_history:
        color = colors[result.label]
        xs, ys = _series(result.history, "train_loss")
        loss_ax.plot(xs, ys, color=color, marker="o", markersize=3, label=f"{result.label} train")
        xs, ys = _series(result.history, VAL_LOSS)
        if ys:
            loss_ax.plot(xs, ys, color=color, linestyle="--", label=f"{result.label} val")
        xs, ys = _series(result.history, VAL_MIOU)
        miou_ax.plot(
            xs, [100 * y for y in ys], color=color, marker="o", markersize=3, label=result.label
        )
    if max(len(r.history) for r in with_history) == 1:
        # One epoch each: single points, on axes from zero rather than a 0.95-1.05 sliver.
        for line in [*loss_ax.lines, *miou_ax.lines]:
            line.set_markersize(7)
        top = max((y for ln in loss_ax.lines for y in ln.get_ydata()
                   if math.isfinite(y)), default=1.0)
        loss_ax.set_ylim(0, 1.2 * top if top > 0 else 1.0)
        miou_ax.set_ylim(0, 100)
        epochs = sorted({float(x) for ln in loss_ax.lines for x in ln.get_xdata()})
        for ax in (loss_ax, miou_ax):
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 1, epochs[-1] + 1)
    loss_ax.set_title("Loss (train solid, validation dashed)")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    miou_ax.set_title("Validation mIoU")
    miou_ax.set_xlabel("epoch")
    miou_ax.set_ylabel("mIoU (%)")
    for ax in (loss_ax, miou_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return to_png(fig)


def confusion_plot(results: list[ModelResult], names: list[str]) -> bytes | None:
    """Row-normalised confusion matrices side by side; None when no run has one."""
    with_cm = [r for r in results if r.confusion is not None]
    if not with_cm:
        return None
    n = len(with_cm)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    size = max(3.8, 0.38 * len(names) + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    annotate = len(names) <= 12
    image = None
    for index, (ax, result) in enumerate(zip(axes.flat, with_cm, strict=False)):
        matrix = normalize_confusion(result.confusion, by="truth")
        image = ax.imshow(100 * matrix, cmap="Blues", vmin=0, vmax=100)
        ax.set_title(result.label, fontsize=10, wrap=True)
        ticks = np.arange(len(matrix))
        tick_names = names if len(names) == len(matrix) else [str(i) for i in ticks]
        ax.set_xticks(ticks, tick_names, rotation=90, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        # Class names and "true" on the first panel of a row only: on the others they ran
        # into the neighbouring panel.
        first = index % cols == 0
        ax.set_yticks(ticks, tick_names if first else [], fontsize=7)
        if first:
            ax.set_ylabel("true", fontsize=8)
        if annotate:
            for (i, j), value in np.ndenumerate(matrix):
                if math.isfinite(value) and value >= 0.01:
                    ax.text(
                        j,
                        i,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if value > 0.6 else "black",
                    )
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="share of true class (%)")
    fig.suptitle("Confusion matrices, each row normalised to 100% (recall on the diagonal)")
    return to_png(fig)
