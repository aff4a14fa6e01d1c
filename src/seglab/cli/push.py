"""``seglab push``: a run folder (its model/) or a model folder to a Hugging Face Hub repo."""

from __future__ import annotations

from pathlib import Path

import typer

from seglab.cli.output import console, fail, print_json


def push_command(
    source: Path = typer.Argument(..., help="Run folder (pushes its model/) or model folder."),
    repo_id: str = typer.Argument(..., help="Hub repo id, org/name (created if missing)."),
    to_dir: Path | None = typer.Option(
        None, "--to-dir",
        help="Upload nothing: write the repo's files into this (new or empty) folder.",
    ),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    revision: str | None = typer.Option(None, "--revision", help="Branch to push to."),
    message: str | None = typer.Option(None, "--message", "-m", help="Commit message."),
    create_pr: bool = typer.Option(False, "--create-pr", help="Open a pull request instead."),
    token: str | None = typer.Option(
        None, "--token", help="Hub token with write access [default: HF_TOKEN or hf auth login]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Push a trained model with its model card (README.md), metrics and training curves.

    Load it anywhere with seglab.from_pretrained("org/name"), Predictor("org/name") or
    seglab predict org/name IMAGES --out DIR.
    """
    from seglab.artifacts.hub import push_to_hub
    from seglab.errors import SeglabError

    try:
        where = push_to_hub(
            source, repo_id, local_dir=to_dir, private=private or None, token=token,
            revision=revision, commit_message=message, create_pr=create_pr,
        )
    except SeglabError as exc:
        fail(str(exc))
    files = sorted(p.name for p in Path(where).iterdir()) if to_dir is not None else None
    if as_json:
        print_json({"repo_id": repo_id, "source": str(source), "uploaded": to_dir is None,
                    "location": where, "files": files})
        return
    if to_dir is not None:
        console.print(f"wrote the files of {repo_id} to {where}: {', '.join(files or [])}",
                      soft_wrap=True)
    else:
        console.print(f"pushed {source} to {repo_id}: {where}", soft_wrap=True)
