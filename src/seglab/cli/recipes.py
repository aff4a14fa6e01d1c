"""``seglab recipes list`` and ``seglab recipes show``: the recipes shipped inside seglab."""

from __future__ import annotations

import typer

from seglab.cli.output import console, fail, print_json, print_wide

app = typer.Typer(
    rich_markup_mode=None,  # help text prints literally
    help="The training recipes and study files shipped with seglab.",
    no_args_is_help=True,
)


@app.command("list")
def list_recipes_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    studies: bool = typer.Option(False, "--studies", help="List the study files instead."),
) -> None:
    """Shipped recipes by name: `seglab train NAME` trains one, `seglab recipes show NAME`
    prints it."""
    from seglab.recipes import list_recipes, recipes_dir

    kind = "study" if studies else "recipe"
    found = list_recipes(kind)
    if as_json:
        print_json({"folder": str(recipes_dir()), "kind": kind,
                    "recipes": [info.to_dict() for info in found]})
        return
    from rich.table import Table

    table = Table(title=f"seglab {'study files' if studies else 'recipes'} ({len(found)})")
    table.add_column("name", no_wrap=True)
    table.add_column("summary")
    for info in found:
        table.add_row(info.name, info.summary)
    print_wide(table)
    console.print(f"folder: {recipes_dir()}", soft_wrap=True)


@app.command("show")
def show_recipe_cmd(
    name: str = typer.Argument(..., help="A shipped recipe's name, e.g. camvid11_lraspp."),
    study: bool = typer.Option(False, "--study", help="NAME is a study file."),
    path_only: bool = typer.Option(False, "--path", help="Print only the file's path."),
) -> None:
    """Print a shipped recipe (copy it to a file, edit it, train it)."""
    from seglab.errors import SeglabError
    from seglab.recipes import resolve_recipe

    try:
        path = resolve_recipe(name, kind="study" if study else "recipe")
    except SeglabError as exc:
        fail(str(exc))
    if path_only:
        console.print(str(path), soft_wrap=True)  # a long path stays one line when piped
        return
    console.print(path.read_text(encoding="utf-8"), end="", soft_wrap=True)
