"""``seglab models list`` and ``seglab models show``: browse the model zoo."""

from __future__ import annotations

import typer

from seglab.cli import parse
from seglab.cli.output import console, fail, print_json, print_wide

app = typer.Typer(
    rich_markup_mode=None,  # help text prints literally
    help="The model zoo: list models, show one model's layers.",
    no_args_is_help=True,
)


@app.command("list")
def list_models_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    flops: bool = typer.Option(False, "--flops", help="Also count GFLOPs at --input."),
    input_size: str = typer.Option("520x520", "--input", help="Input HxW for --flops."),
    num_classes: int = typer.Option(21, "--num-classes", help="Class count to build with."),
    family: str | None = typer.Option(None, "--family", help="Only this family."),
) -> None:
    """Every registered model: family, backbone, parameters, GFLOPs, pretrained weights.

    Counts are of build_model(name, num_classes) with default options, computed on the meta
    device (no memory, no arithmetic). GFLOPs are multiply-adds / 1e9, torchvision's convention.
    """
    from seglab.errors import SeglabError
    from seglab.models.profile import profile_model
    from seglab.models.registry import list_models

    try:
        size = parse.size(input_size)
        rows = [profile_model(info.name, num_classes=num_classes, input_size=size, flops=flops)
                for info in list_models(family)]
    except SeglabError as exc:
        fail(str(exc))
    if as_json:
        print_json({"num_classes": num_classes, "input_size": list(size) if flops else None,
                    "gflops_convention": "multiply-adds / 1e9 (as torchvision)",
                    "models": rows})
        return
    from rich.table import Table

    title = f"seglab models ({len(rows)}), {num_classes} classes"
    if flops:
        title += f", GFLOPs at {size[0]}x{size[1]}"
    table = Table(title=title)
    for column in ("name", "family", "backbone", "params (M)"):
        table.add_column(column, justify="right" if column.startswith("params") else "left",
                         no_wrap=True)
    if flops:
        table.add_column("GFLOPs", justify="right")
    table.add_column("pretrained")
    for row in rows:
        cells = [row["name"], row["family"], row["backbone"], f"{row['params_m']:.2f}"]
        if flops:
            cells.append(f"{row['gflops']:.2f}")
        cells.append(row["pretrained"])
        table.add_row(*cells)
    print_wide(table, width=160)



@app.command("show")
def show_model_cmd(
    name: str = typer.Argument(..., help="A model name from `seglab models list`."),
    num_classes: int = typer.Option(21, "--num-classes", help="Class count to build with."),
    freeze: str = typer.Option("none", "--freeze",
                               help="none | head | last:N | train:GLOB | freeze:GLOB"),
    input_size: str = typer.Option("520x520", "--input", help="Input HxW."),
    depth: int = typer.Option(3, "--depth", help="Module nesting depth to list."),
    option: list[str] = typer.Option(
        [], "--option", "-o", help="Model option KEY=VALUE (repeatable), e.g. backbone=resnet18"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """One model's layers with input/output shapes, parameters and trainable flags."""
    from seglab.errors import SeglabError
    from seglab.models.profile import describe_model

    try:
        doc = describe_model(name, num_classes=num_classes, freeze=freeze,
                             input_size=parse.size(input_size), depth=depth,
                             **parse.key_values(option, "--option", typed=True))
    except SeglabError as exc:
        fail(str(exc))
    if as_json:
        print_json(doc)
        return
    from rich.table import Table

    table = Table(title=f"{name}: {num_classes} classes, input {input_size}, freeze {freeze}")
    for column in ("layer", "type", "input", "output", "params", "trainable"):
        table.add_column(column, justify="right" if column in ("params",) else "left",
                         overflow="fold")
    for row in doc["layers"]:
        if row["params"] == 0:
            flag = "-"
        elif row["trainable"] == row["params"]:
            flag = "yes"
        elif row["trainable"] == 0:
            flag = "no"
        else:
            flag = f"partly ({row['trainable']:,})"
        indent = "  " * row["depth"]
        table.add_row(indent + row["name"], row["kind"], row["input_shape"], row["output_shape"],
                      f"{row['params']:,}", flag)
    print_wide(table, width=160)
    outputs = ", ".join(f"{k}: {'x'.join(map(str, v))}" for k, v in doc["outputs"].items())
    console.print(
        f"outputs {outputs}\ntrainable parameters {doc['trainable_params']:,} of "
        f"{doc['total_params']:,} ({100 * doc['trainable_params'] / doc['total_params']:.1f}%), "
        f"frozen BatchNorm layers kept in eval: {doc['frozen_batchnorms']}"
    )
