"""Write a comparison report folder: report.html, report.md, results.json, figures/, gallery/."""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglab import __version__
from seglab.data.classes import ClassMap
from seglab.errors import SeglabError
from seglab.io_utils import atomic_dir, json_safe
from seglab.metrics import MIOU
from seglab.report import plots
from seglab.report.gallery import GallerySample, gallery_rows, worst_rows
from seglab.report.html import data_uri, render_html
from seglab.report.runs import ModelResult, recipe_differences
from seglab.report.significance import (
    markdown_worst,
    per_image_plot,
    significance_context,
    significance_markdown,
    worst_images,
)
from seglab.report.tables import (
    Cell,
    active_columns,
    comparison_markdown,
    format_duration,
    markdown_table,
    pareto_labels,
    per_class_markdown,
    summary_record,
    table_rows,
)


@dataclass
class ReportInfo:
    """What the report says about how it was made."""

    title: str = "Model comparison"
    data: str = ""
    split: str = "test"
    bench_note: str = ""
    command: str = ""
    method: list[str] = field(default_factory=list)
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    )


@dataclass
class ReportFiles:
    """Paths of what :func:`write_report` wrote."""

    folder: Path
    html: Path
    markdown: Path
    results: Path
    figures: dict[str, Path]
    document: dict[str, Any] = field(default_factory=dict)  # results.json's, as written


PER_IMAGE_FIGURE = "figures/per_image_miou.png"
# id, title, file name, note
_FIGURES = (
    (
        "pareto",
        "Accuracy vs latency",
        "miou_vs_latency.png",
        "Pareto-optimal models (tagged in the table, joined by the dashed line): "
        "no other model is both faster and more accurate. Error bars: bootstrap interval "
        "of the mIoU over the test images, where the runs stored per-image counts.",
    ),
    (
        "per-class",
        "IoU per class",
        "per_class_iou.png",
        "Rare and thin classes are usually where architectures differ most.",
    ),
    ("curves", "Training curves", "training_curves.png", ""),
    (
        "confusion",
        "Confusion matrices",
        "confusion_matrices.png",
        "Off-diagonal cells show which classes a model mistakes for which.",
    ),
)


def _render_figures(results: list[ModelResult], names: list[str]) -> dict[str, bytes]:
    rendered = {
        "pareto": plots.pareto_plot(results),
        "per-class": plots.per_class_plot(results, names),
        "curves": plots.curves_plot(results),
        "confusion": plots.confusion_plot(results, names),
    }
    return {key: png for key, png in rendered.items() if png is not None}


def _cards(results: list[ModelResult], pareto: list[str]) -> list[dict[str, str]]:
    def pick(values: dict[str, float], highest: bool) -> tuple[str, float] | None:
        if not values:
            return None
        label = (max if highest else min)(values, key=values.__getitem__)
        return label, values[label]

    cards = []
    miou = {r.label: r.metrics[MIOU] for r in results if _finite(r.metrics.get(MIOU))}
    if best := pick(miou, True):
        cards.append(
            {"key": "Most accurate", "value": best[0], "sub": f"mIoU {100 * best[1]:.1f}%"}
        )
    latency = {
        r.label: r.bench["latency_ms"] for r in results if _finite(r.bench.get("latency_ms"))
    }
    if best := pick(latency, False):
        cards.append({"key": "Fastest", "value": best[0], "sub": f"{best[1]:.1f} ms per image"})
    size = {r.label: r.bench["size_mb"] for r in results if _finite(r.bench.get("size_mb"))}
    if best := pick(size, False):
        cards.append({"key": "Smallest", "value": best[0], "sub": f"{best[1]:.1f} MB of weights"})
    train = {r.label: r.train_time_s for r in results if r.train_time_s is not None}
    if best := pick(train, False):
        cards.append(
            {"key": "Quickest to train", "value": best[0], "sub": format_duration(best[1])}
        )
    if pareto:
        cards.append(
            {
                "key": "Pareto front",
                "value": str(len(pareto)) + " of " + str(len(results)),
                "sub": ", ".join(pareto),
            }
        )
    return cards


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _per_class_rows(results: list[ModelResult], names: list[str]) -> list[dict[str, Any]]:
    scores = [r.per_class_iou(names) for r in results]
    rows = []
    for index, name in enumerate(names):
        values = [s[index] for s in scores]
        finite = [v for v in values if math.isfinite(v)]
        best = max(finite) if len(finite) > 1 else None
        cells = [
            Cell(f"{100 * v:.1f}" if math.isfinite(v) else "–", v, best is not None and v == best)
            for v in values
        ]
        rows.append({"name": name, "cells": cells})
    return rows


def _subtitle(info: ReportInfo, results: list[ModelResult]) -> str:
    parts = [f"{len(results)} models"]
    if info.data:
        parts.append(f"data {info.data}")
    parts.append(f"{info.split} split")
    parts.append(info.created)
    return " · ".join(parts)


def write_report(
    results: list[ModelResult],
    classmap: ClassMap,
    out_dir: str | Path,
    *,
    gallery: list[GallerySample] | None = None,
    info: ReportInfo | None = None,
    significance: dict[str, Any] | None = None,
    seeds: dict[str, Any] | None = None,
    worst: dict[str, list[GallerySample]] | None = None,
) -> ReportFiles:
    """Write the comparison report for ``results`` into ``out_dir`` (replaced atomically).

    A complete ``out_dir`` exists at every moment once one was written: the new folder is
    built beside it and swapped in (:func:`seglab.io_utils.atomic_dir`); a writer killed
    half-way leaves the previous report, and its hidden ``.<out_dir>.*`` leftovers are
    removed by the next write.

    ``out_dir`` receives ``report.html`` (self-contained), ``report.md`` (links the PNGs in
    ``figures/`` and ``gallery/``), and ``results.json`` (every number of the report).
    ``significance`` (:func:`seglab.paired.significance_table`) adds the paired tests and the
    ranking groups to all three; ``seeds`` (:func:`seglab.seeds.seed_table`) the summary of
    each configuration over its training seeds; ``worst`` ({label: samples with that model's
    prediction}) the panels of each model's hardest images (image, truth, prediction, error map).
    """
    if not results:
        raise SeglabError("nothing to report: no models were given")
    labels = [r.label for r in results]
    if len(set(labels)) != len(labels):
        raise SeglabError(f"model labels must be unique in a report, got {labels}")
    info = info or ReportInfo()
    names = list(classmap.names)
    out_dir = Path(out_dir)

    pareto = pareto_labels(results)
    columns = active_columns(results)
    cells = table_rows(results, columns)
    figures = _render_figures(results, names)
    cells_gallery = gallery_rows(gallery, classmap) if gallery else []
    differences = recipe_differences(results)
    num_images = next(
        (r.metrics.get("num_images") for r in results if r.metrics.get("num_images")), None
    )

    figure_meta = [
        {"id": fid, "title": title, "file": f"figures/{fname}", "note": note, "png": figures[fid]}
        for fid, title, fname, note in _FIGURES
        if fid in figures
    ]
    gallery_files = [
        [f"gallery/{i:02d}_{j}_{_slug(cell.title)}.{cell.extension}" for j, cell in enumerate(row)]
        for i, row in enumerate(cells_gallery)
    ]

    context = {
        "title": info.title,
        "subtitle": _subtitle(info, results),
        "cards": _cards(results, pareto),
        "columns": columns,
        "rows": [
            {
                "label": r.label,
                "status": r.status,
                "source": r.source,
                "pareto": r.label in pareto,
                "cells": row,
            }
            for r, row in zip(results, cells, strict=True)
        ],
        "split": info.split,
        "num_images": num_images,
        "bench_note": info.bench_note,
        "differences": {
            k: {lab: _show(v) for lab, v in vals.items()} for k, vals in differences.items()
        },
        "fair": sum(1 for r in results if r.recipe) >= 2,
        "labels": labels,
        "figures": [dict(f, uri=data_uri(f["png"])) for f in figure_meta],
        "per_class_rows": _per_class_rows(results, names),
        "gallery": [
            [{"title": c.title, "caption": c.caption, "uri": data_uri(c.data, c.mime)} for c in row]
            for row in cells_gallery
        ],
        "legend": list(zip(names, classmap.colors, strict=True)),
        "method": info.method,
        "version": __version__,
        "created": info.created,
        "command": info.command,
        "significance": significance_context(significance),
        "per_image": None,
        "seeds": [row["text"] for row in (seeds or {}).values() if "text" in row],
    }
    spread_png = per_image_plot(results)
    hardest = worst_images(results)
    panels = worst_rows(worst or {}, classmap)
    worst_files = {
        label: [[f"gallery/worst/{_slug(label)}_{i:02d}_{j}_{_slug(cell.title)}.{cell.extension}"
                 for j, cell in enumerate(row)] for i, row in enumerate(rows)]
        for label, rows in panels.items()
    }  # fmt: skip
    for row in hardest:
        row["panels"] = [[_cell(c) for c in cells] for cells in panels.get(row["label"], [])]
    if spread_png is not None:
        context["per_image"] = {"uri": data_uri(spread_png), "worst": hardest,
                                "file": PER_IMAGE_FIGURE}
    html = render_html(context)
    markdown = _markdown(
        results, names, info, figure_meta, cells_gallery, gallery_files, differences, pareto
    ) + significance_markdown(significance)
    if context["seeds"]:
        markdown += "\n## Over training seeds\n\n" + "".join(
            f"- {line}\n" for line in context["seeds"])
    if spread_png is not None:
        markdown += (f"\n## Per-image scores\n\n![Per-image mIoU]({PER_IMAGE_FIGURE})\n"
                     + markdown_worst(hardest))
    document = {
        "title": info.title,
        "created": info.created,
        "seglab_version": __version__,
        "command": info.command,
        "data": info.data,
        "split": info.split,
        "classes": classmap.to_dict(),
        "columns": [c.key for c in columns],
        "models": [summary_record(r, set(pareto)) for r in results],
        "pareto_front": pareto,
        "recipe_differences": differences,
        "bench_note": info.bench_note,
        "figures": {f["id"]: f["file"] for f in figure_meta},
        "gallery": [[cell for cell in row] for row in gallery_files],
        "worst_images": worst_files,
        "significance": significance,
        "seeds": seeds,
    }

    results_text = json.dumps(json_safe(document), indent=2, default=str) + "\n"
    with atomic_dir(out_dir) as tmp:
        for fig in figure_meta:
            _write_bytes(tmp / fig["file"], fig["png"])
        if spread_png is not None:
            _write_bytes(tmp / PER_IMAGE_FIGURE, spread_png)
        for row, paths in zip(cells_gallery, gallery_files, strict=True):
            for cell, rel in zip(row, paths, strict=True):
                _write_bytes(tmp / rel, cell.data)
        for label, rows in panels.items():
            for row, paths in zip(rows, worst_files[label], strict=True):
                for cell, rel in zip(row, paths, strict=True):
                    _write_bytes(tmp / rel, cell.data)
        (tmp / "report.html").write_text(html, encoding="utf-8")
        (tmp / "report.md").write_text(markdown, encoding="utf-8")
        (tmp / "results.json").write_text(results_text)
    return ReportFiles(
        folder=out_dir,
        html=out_dir / "report.html",
        markdown=out_dir / "report.md",
        results=out_dir / "results.json",
        figures={f["id"]: out_dir / f["file"] for f in figure_meta},
        document=json.loads(results_text),
    )



def _cell(cell: Any) -> dict[str, str]:
    return {"title": cell.title, "caption": cell.caption, "uri": data_uri(cell.data, cell.mime)}


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:40]


def _show(value: Any) -> str:
    return (
        "–"
        if value is None
        else json.dumps(value)
        if isinstance(value, (list, dict))
        else str(value)
    )


def _markdown(
    results: list[ModelResult],
    names: list[str],
    info: ReportInfo,
    figure_meta: list[dict[str, Any]],
    cells_gallery: list[list[Any]],
    gallery_files: list[list[str]],
    differences: dict[str, dict[str, Any]],
    pareto: list[str],
) -> str:
    lines = [f"# {info.title}", "", _subtitle(info, results), "", comparison_markdown(results), ""]
    if info.bench_note:
        lines += [info.bench_note, ""]
    if pareto:
        lines += [f"Pareto front (mIoU vs latency): {', '.join(pareto)}.", ""]
    if differences:
        labels = [r.label for r in results]
        rows = [
            [f"`{k}`"] + [_show(v.get(label)) for label in labels] for k, v in differences.items()
        ]
        lines += [
            "**The models were not trained under one recipe.** Settings that differ:",
            "",
            markdown_table(["setting"] + labels, rows),
            "",
        ]
    for fig in figure_meta:
        lines += [f"## {fig['title']}", "", f"![{fig['title']}]({fig['file']})", ""]
        if fig["note"]:
            lines += [fig["note"], ""]
        if fig["id"] == "per-class":
            lines += [per_class_markdown(results, names), ""]
    if cells_gallery:
        header = [html.escape(cell.title, quote=False) for cell in cells_gallery[0]]
        rows = [
            [  # the <br> is ours; the title and caption are escaped
                f"![{html.escape(cell.title, quote=False)}]({path})<br>"
                f"{html.escape(cell.caption, quote=False)}"
                for cell, path in zip(row, paths, strict=True)
            ]
            for row, paths in zip(cells_gallery, gallery_files, strict=True)
        ]
        lines += ["## Predictions", "", markdown_table(header, rows, escape=False), ""]
    lines += ["## Models", ""]
    lines += [f"- **{r.label}** ({r.status}): `{r.source}`" for r in results]
    lines += [""] + [f"- {line}" for line in info.method]
    if info.command:
        lines += ["", f"Command: `{info.command}`"]
    return "\n".join(lines).rstrip() + "\n"
