"""``python -m seglab`` runs the CLI."""

from seglab.cli.main import app

app(prog_name="seglab")
