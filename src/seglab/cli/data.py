"""``seglab data inspect|check SPEC``: what a dataset holds, and whether every pair is sound.

Parsing and printing only; the documents come from ``seglab.data.inspect``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text
from typer.core import TyperCommand

from seglab.cli import parse
from seglab.cli.output import console, fail, print_json, progress_bar
from seglab.errors import SeglabError

if TYPE_CHECKING:  # typer's own click types, only for the annotations below
    import click

data_app = typer.Typer(
    rich_markup_mode=None,  # help text prints literally: [default: ...] and paths stay
    help="Inspect and validate datasets (camvid:, voc:, folder:, ...).", no_args_is_help=True
)

OPTION_HELP = "Format option KEY=VALUE (repeatable), e.g. classes=19, keep_void=true, seed=1."


def spec_help() -> str:
    """The dataset argument's help: every format in the registry, so a new one is listed."""
    # lazy: the format registry imports torch and torchvision (this help page 0.2 -> 3.8 s,
    # measured); so it is read only when a data verb's --help is shown, not at every start.
    from seglab.data.formats import FORMATS

    return f"Dataset spec '<format>:<path>': {', '.join(FORMATS)}."


class _FormatsInHelp(TyperCommand):
    """A data verb whose ``SPEC`` help names the registered formats, read when help is shown."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> Any:
        for param in self.params:
            if param.name == "spec":
                param.help = spec_help()
        return super().format_help(ctx, formatter)


@data_app.command("inspect", cls=_FormatsInHelp)
def inspect_command(
    spec: str = typer.Argument(..., help="Dataset spec '<format>:<path>'."),
    split: str = typer.Option("train", help="Split whose class pixel shares are counted."),
    weights: str = typer.Option(
        None,
        help="Suggest class weights with this strategy (n_c = pixels of class c, N = all "
        "labelled pixels, f_c = n_c / N, C = classes): inverse 1 / (C f_c); median_frequency "
        "median(freq) / freq_c with freq_c = n_c / pixels of the images that contain c (Eigen "
        "& Fergus); enet 1 / ln(c + f_c), c = 1.02; effective_number (1 - beta) / "
        "(1 - beta^n_c), normalised to mean 1; camvid_linear X - 100 f_c, absent classes Y; "
        "camvid_ratio X max(n) / N - Y f_c, absent classes X max(n) / N; none 1. Absent "
        "classes get 0 in the others; absent_weight=W overrides them all.",
    ),
    weight_param: list[str] = typer.Option(
        None, help="Strategy parameter KEY=VALUE, e.g. X=50, Y=10, c=1.02, absent_weight=0."
    ),
    option: list[str] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    plot: str = typer.Option(
        None, "--plot", help="Also draw the class shares and image sizes to this .png/.pdf/.svg."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Pairs per split, image sizes, classes with pixel share, ignore share, class weights."""
    # lazy: the data layer brings torch and torchvision (2.9 s), not for "seglab --help".
    from seglab.data.inspect import inspect_source

    params = parse.float_values(parse.key_values(weight_param, "--weight-param"), "--weight-param")
    options = parse.key_values(option, "--option")
    try:
        with progress_bar() as progress:
            doc = inspect_source(spec, split, weights, params, progress=progress, **options)
        if plot:
            from seglab.data.inspect_plot import plot_inspection  # lazy: matplotlib, ~0.9 s

            doc["plot"] = str(plot_inspection(doc, plot))
    except (SeglabError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_json(doc)
        return
    from rich.table import Table  # lazy: see cli/predict.py's rich.progress

    console.print(
        Text.assemble((spec, "bold"), f"  layout {doc['layout']}, {doc['mask_encoding']}")
    )
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
    if plot:
        console.print(f"figure: {doc['plot']}", soft_wrap=True)  # a path stays whole


@data_app.command("check", cls=_FormatsInHelp)
def check_command(
    spec: str = typer.Argument(..., help="Dataset spec '<format>:<path>'."),
    option: list[str] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Open every pair (image decodes, mask decodes, sizes match); exit 1 on any problem."""
    from seglab.data.inspect import check_source  # lazy: torch, as in inspect_command

    options = parse.key_values(option, "--option")
    try:
        with progress_bar() as progress:
            doc = check_source(spec, progress=progress, **options)
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
        for warning in doc.get("warnings", []):
            console.print(f"  warning: {warning}", style="yellow")
    if not doc["ok"]:
        raise typer.Exit(1)
