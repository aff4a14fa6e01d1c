"""The ``seglab`` command: one typer app, one sub-command module per verb."""

from __future__ import annotations

import typer

from seglab import __version__
from seglab.cli.output import ErrorHandlingGroup

app = typer.Typer(
    cls=ErrorHandlingGroup,  # a seglab error that escaped a verb prints as a message, exit 1
    rich_markup_mode=None,  # help text prints literally: [default: ...] and paths stay
    name="seglab",
    help="Choose, fine-tune, compare and ship semantic segmentation models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"seglab {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """seglab: datasets, model zoo, training, metrics, benchmarks, reports."""


# Sub-commands register here, one line each (keep imports light: heavy libs load inside commands).
from seglab.cli.predict import predict as _predict  # noqa: E402

app.command("predict")(_predict)
from seglab.cli.models import app as _models_app  # noqa: E402

app.add_typer(_models_app, name="models")
from seglab.cli.train import train as _train  # noqa: E402

app.command("train")(_train)
from seglab.cli.eval import evaluate as _evaluate  # noqa: E402

app.command("eval")(_evaluate)
from seglab.cli.compare import compare_command as _compare  # noqa: E402
from seglab.cli.demo import demo_command as _demo  # noqa: E402

app.command("compare")(_compare)
app.command("demo")(_demo)
from seglab.cli.data import data_app as _data_app  # noqa: E402

app.add_typer(_data_app, name="data")
from seglab.cli.bench import bench_command as _bench  # noqa: E402

app.command("bench")(_bench)
from seglab.cli.export import export_command as _export  # noqa: E402

app.command("export")(_export)
from seglab.cli.study import study_app as _study_app  # noqa: E402

app.add_typer(_study_app, name="study")
from seglab.cli.recipes import app as _recipes_app  # noqa: E402

app.add_typer(_recipes_app, name="recipes")
from seglab.cli.push import push_command as _push  # noqa: E402

app.command("push")(_push)
from seglab.cli.importing import import_command as _import  # noqa: E402

app.command("import")(_import)

from seglab.cli.json_mode import guard_json_verbs  # noqa: E402

guard_json_verbs(app)  # last: after every verb is registered
