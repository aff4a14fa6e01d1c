"""Thin typer commands: parse, call the library, print."""
