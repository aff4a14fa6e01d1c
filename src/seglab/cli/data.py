"""``seglab data inspect|check SPEC``: what a dataset holds, and whether every pair is sound."""

from __future__ import annotations

from typing import Any

import typer

from seglab.cli.output import console, fail, print_json

data_app = typer.Typer(
    help="Inspect and validate datasets (camvid:, voc:, folder:, ...).", no_args_is_help=True
)

SPEC_HELP = "Dataset spec '<format>:<path>': folder, camvid, voc, cityscapes, suim, synthetic."
OPTION_HELP = "Format option KEY=VALUE (repeatable), e.g. classes=19, keep_void=true, seed=1."


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def inspect_source(
    spec: str,
    split: str = "train",
    weights: str | None = None,
    weight_params: dict[str, float] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The ``data inspect`` document (library function; the CLI only prints it)."""
    from collections import Counter

    from seglab.data.dataset import image_size
    from seglab.data.formats import open_source
    from seglab.data.stats import class_weights, compute_pixel_stats

    source = open_source(spec, **options)
    cm = source.classmap
    sizes = Counter(image_size(img) for pairs in source.splits.values() for img, _ in pairs)
    doc: dict[str, Any] = {
        "spec": spec,
        "format": source.format,
        "root": str(source.root),
        "layout": source.layout,
        "mask_encoding": source.decoder.describe(),
        "notes": source.notes,
        "splits": {name: len(pairs) for name, pairs in source.splits.items()},
        "image_sizes": [{"height": h, "width": w, "count": n} for (h, w), n in sizes.most_common()],
        "num_classes": cm.num_classes,
        "ignore_index": cm.ignore_index,
        "split": split,
    }
    stats = compute_pixel_stats(source.dataset(split))
    shares = stats.shares()
    total = max(stats.total_pixels, 1)
    doc["ignore_share"] = stats.ignore_pixels / total
    doc["classes"] = [
        {
            "id": i,
            "name": name,
            "color": list(cm.colors[i]),
            "pixels": int(stats.counts[i]),
            "share": float(shares[i]),
            "share_all": float(stats.counts[i] / total),
            "images": int(stats.images_with_class[i]),
        }
        for i, name in enumerate(cm.names)
    ]
    if weights:
        w = class_weights(stats, weights, names=cm.names, **(weight_params or {}))
        doc["weights"] = {
            "strategy": weights,
            "params": weight_params or {},
            "values": [round(float(v), 6) for v in w],
        }
        for row, value in zip(doc["classes"], doc["weights"]["values"], strict=True):
            row["weight"] = value
    return doc


def check_source(spec: str, progress: bool = False, **options: Any) -> dict[str, Any]:
    """Validate every pair of every split; all problems listed, none raised.

    Each pair is fully decoded (catches truncated files), its mask ids/colours checked against
    the class table, and image and mask sizes compared. ``progress`` shows a bar on stderr.
    """
    from seglab.data.formats import open_source
    from seglab.errors import SeglabError

    source = open_source(spec, strict=False, **options)
    problems = [{"split": None, "file": None, "problem": p} for p in source.problems]
    checked = 0
    for split in source.splits:
        dataset = source.dataset(split)
        indices = range(len(dataset))
        if progress:
            from rich.progress import track

            from seglab.cli.output import err_console

            indices = track(
                indices,
                description=f"checking {split}",
                console=err_console,
                transient=True,
                total=len(dataset),
            )
        for i in indices:
            try:
                dataset.load_pair(i)
            except SeglabError as exc:
                problems.append(
                    {"split": split, "file": str(dataset.pairs[i][0]), "problem": str(exc)}
                )
            checked += 1
    return {
        "spec": spec,
        "layout": source.layout,
        "pairs_checked": checked,
        "splits": {k: len(v) for k, v in source.splits.items()},
        "ok": not problems,
        "problems": problems,
    }


@data_app.command("inspect")
def inspect_command(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    split: str = typer.Option("train", help="Split whose class pixel shares are counted."),
    weights: str = typer.Option(
        None,
        help="Suggest class weights with this strategy "
        "(inverse, median_frequency, enet, effective_number, "
        "camvid_linear, camvid_ratio).",
    ),
    weight_param: list[str] = typer.Option(None, help="Strategy parameter KEY=VALUE, e.g. X=50."),
    option: list[str] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Pairs per split, image sizes, classes with pixel share, ignore share, class weights."""
    from seglab.errors import SeglabError

    params = {k: float(v) for k, v in _pairs(weight_param, "--weight-param").items()}
    try:
        doc = inspect_source(spec, split, weights, params, **_pairs(option, "--option"))
    except (SeglabError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_json(doc)
        return
    from rich.table import Table

    console.print(f"[bold]{spec}[/]  layout {doc['layout']}, {doc['mask_encoding']}")
    for note in doc["notes"]:
        console.print(f"  - {note}")
    console.print("pairs: " + ", ".join(f"{k} {v}" for k, v in doc["splits"].items()))
    console.print(
        "image sizes (HxW): "
        + ", ".join(f"{s['height']}x{s['width']} ({s['count']})" for s in doc["image_sizes"][:6])
    )
    table = Table(
        title=f"{doc['num_classes']} classes, pixel share in {split}"
        f" (ignore {doc['ignore_share'] * 100:.1f}% of pixels)"
    )
    for col in ("id", "class", "% labelled", "% all px", "images"):
        table.add_column(col, justify="left" if col == "class" else "right")
    if weights:
        table.add_column(f"weight ({weights})", justify="right")
    for row in doc["classes"]:
        cells = [
            str(row["id"]),
            row["name"],
            f"{row['share'] * 100:.2f}",
            f"{row['share_all'] * 100:.2f}",
            str(row["images"]),
        ]
        if weights:
            cells.append(f"{row['weight']:.4g}")
        table.add_row(*cells)
    console.print(table)


@data_app.command("check")
def check_command(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    option: list[str] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Open every pair (image decodes, mask decodes, sizes match); exit 1 on any problem."""
    from seglab.errors import SeglabError

    try:
        doc = check_source(spec, progress=True, **_pairs(option, "--option"))
    except SeglabError as exc:
        fail(str(exc))
    if as_json:
        print_json(doc)
    else:
        console.print(
            f"{spec}: {doc['pairs_checked']} pairs checked, {len(doc['problems'])} problem(s)"
        )
        for p in doc["problems"]:
            where = f"[{p['split']}] " if p["split"] else ""
            console.print(f"  - {where}{p['problem']}", highlight=False)
    if not doc["ok"]:
        raise typer.Exit(1)
