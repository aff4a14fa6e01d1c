"""The Hugging Face Hub: load a seglab model by repo id, push a run or model folder to a repo.

Everything goes through ``huggingface_hub``, so its cache (``HF_HOME`` / ``HF_HUB_CACHE``),
offline mode (``HF_HUB_OFFLINE=1``: only the cache is read), endpoint (``HF_ENDPOINT``),
token (``HF_TOKEN``, ``hf auth login``) and proxy settings (``HTTPS_PROXY``, ...) apply as they
do for transformers or timm.

A source names a Hub repo when it is written ``hf://org/name[@revision]``, or ``org/name``
(``[@revision]``) where no such local path exists: an existing local folder always wins.
A Hub repo holds a ``save_pretrained`` folder (``config.json`` + ``model.safetensors``), its
model card (``README.md``) and, pushed from a run, ``metrics.json``, ``per_class.csv``,
``history.csv`` and ``curves.png``.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from seglab.artifacts import rundir
from seglab.errors import ConfigError, ModelError

HUB_PREFIX = "hf://"
# The Hub's own rule for repo names: letters, digits, '-', '_', '.'; no '--' or '..'.
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
# Files of a run that travel with its model to the Hub (beside model/'s own files).
RUN_FILES = (rundir.METRICS_FILE, rundir.PER_CLASS_FILE, rundir.HISTORY_FILE, "curves.png")


def parse_repo_id(source: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` when ``source`` names a Hub repo, else None (a local path).

    Raises ConfigError for an ``hf://`` source that is not a valid ``org/name``.
    """
    text = os.fspath(source)
    if text.startswith("hf:/") and not text.startswith(HUB_PREFIX):
        text = HUB_PREFIX + text[len("hf:/"):]  # Path("hf://org/name") keeps one slash
    explicit = text.startswith(HUB_PREFIX)
    if explicit:
        text = text[len(HUB_PREFIX):]
    elif Path(text).expanduser().exists():
        return None
    repo_id, _, revision = text.partition("@")
    if not valid_repo_id(repo_id):
        if explicit:
            raise ConfigError(
                f"{os.fspath(source)!r} is not a Hugging Face repo id: expected hf://org/name "
                "(letters, digits, '-', '_', '.'), optionally @revision"
            )
        return None
    return repo_id, revision or None


def valid_repo_id(repo_id: str) -> bool:
    """True for a well-formed ``org/name`` (the Hub's naming rule)."""
    return bool(_REPO_ID.match(repo_id)) and "--" not in repo_id and ".." not in repo_id


def is_repo_id(source: Any) -> bool:
    """True when ``source`` (a string or path) names a Hub repo rather than a local path."""
    if not isinstance(source, str | os.PathLike):
        return False
    return parse_repo_id(source) is not None


def offline() -> bool:
    """Hub offline mode: ``huggingface_hub``'s flag, or ``HF_HUB_OFFLINE`` set since import."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or flag in ("1", "ON", "YES", "TRUE")


def _hub_errors() -> Any:
    return importlib.import_module("huggingface_hub.utils")


def _no_token_error() -> type[BaseException]:
    """huggingface_hub's "no token" error (an OSError, caught before connection errors)."""
    for module in ("huggingface_hub.errors", "huggingface_hub.utils"):
        try:
            return importlib.import_module(module).LocalTokenNotFoundError
        except (ImportError, AttributeError):
            continue
    return _NeverRaised


class _NeverRaised(Exception):
    """Stands in for an error class this huggingface_hub version does not have."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of the HTTP clients huggingface_hub versions use."""
    found: list[type[BaseException]] = [OSError]
    for module, name in (("httpx", "HTTPError"), ("httpx2", "HTTPError"),
                         ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def download_model(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The local snapshot folder of a Hub repo holding a seglab model (downloaded if needed).

    ``snapshot_download`` honours the Hub cache, offline mode and proxies; offline, only the
    cache is read. Raises ConfigError (no such repo / revision) or ModelError (unreachable and
    not cached, access refused, or the repo holds no seglab model), each naming the repo.
    """
    parsed = parse_repo_id(source)
    if parsed is None:
        raise ConfigError(f"{os.fspath(source)!r} is not a Hugging Face repo id (org/name)")
    repo_id, pinned = parsed
    revision = revision or pinned
    from huggingface_hub import constants, snapshot_download

    errors = _hub_errors()
    is_offline = offline()
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        folder = snapshot_download(
            repo_id, revision=revision, token=token, library_name="seglab",
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            local_files_only=is_offline,
        )
    except errors.LocalEntryNotFoundError as exc:
        cache = cache_dir or constants.HF_HUB_CACHE
        if is_offline:
            raise ModelError(
                f"Hub model {where}: offline mode (HF_HUB_OFFLINE) is on and the Hugging Face "
                f"cache {cache} holds no copy of it; load it once online, or give a local folder"
            ) from exc
        raise ModelError(
            f"Hub model {where}: cannot reach {constants.ENDPOINT} and the cache {cache} holds "
            "no copy (check the connection and proxy settings, e.g. HTTPS_PROXY)"
        ) from exc
    except errors.GatedRepoError as exc:
        raise ModelError(f"Hub model {where} is gated: accept its terms on the Hub, then log "
                         "in (hf auth login) or set HF_TOKEN") from exc
    except errors.RepositoryNotFoundError as exc:
        raise ConfigError(
            f"{os.fspath(source)!r}: no local file or folder of that name, and no Hub repo "
            f"{repo_id} (or it is private: log in with hf auth login or set HF_TOKEN)"
        ) from exc
    except errors.RevisionNotFoundError as exc:
        raise ConfigError(f"Hub repo {repo_id} has no revision {revision!r}") from exc
    except errors.HfHubHTTPError as exc:
        raise ModelError(f"Hub model {where}: the Hub refused the download: {exc}") from exc
    except _transport_errors() as exc:
        raise ModelError(
            f"Hub model {where}: download failed ({exc}); check the connection and proxy "
            "settings, or set HF_HUB_OFFLINE=1 to use the cache only"
        ) from exc
    folder = Path(folder)
    if not rundir.is_model_dir(folder):
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise ModelError(
            f"Hub repo {where} holds no seglab model: {rundir.MODEL_CONFIG_FILE} is missing "
            f"(files: {', '.join(present) or 'none'}); push one with seglab push"
        )
    return folder


def resolve_model_source(source: str | os.PathLike) -> str | os.PathLike | Path:
    """``source`` itself when it is local, else its downloaded Hub snapshot folder."""
    return download_model(source) if is_repo_id(source) else source


# --- pushing ----------------------------------------------------------------------------------


def _model_and_run(source: str | os.PathLike) -> tuple[Path, Path | None]:
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"cannot push {path}: it does not exist (give a run or model folder)")
    run = rundir.run_dir_of(path)
    if rundir.is_model_dir(path):
        return path, run
    if run is not None:
        model = rundir.model_dir(run)
        if not rundir.is_model_dir(model):
            raise ConfigError(
                f"cannot push run {run}: it has no {rundir.MODEL_DIR}/ folder yet (training "
                "writes it at the end; an unfinished run can be finished with --resume)"
            )
        return model, run
    raise ConfigError(
        f"cannot push {path}: it is neither a model folder ({rundir.MODEL_CONFIG_FILE}) nor a run "
        f"folder; export a checkpoint with seglab export or save_pretrained first"
    )


def verify_model_files(model: Path) -> None:
    """ConfigError naming the file when a model folder's file is not what its name says:
    ``*.safetensors`` must be safetensors (a pickle renamed would run code where it is
    loaded with ``torch.load``), ``*.json`` must be JSON."""
    import json

    from safetensors import SafetensorError, safe_open

    for item in sorted(model.iterdir()):
        if not item.is_file():
            continue
        try:
            if item.suffix == ".safetensors":
                with safe_open(str(item), framework="pt") as handle:
                    handle.keys()
            elif item.suffix == ".json":
                json.loads(item.read_text(encoding="utf-8"))
        except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as exc:
            kind = "safetensors" if item.suffix == ".safetensors" else "JSON"
            raise ConfigError(f"cannot push {item}: it is not a {kind} file as its name says "
                              f"({type(exc).__name__}); export the model again") from None


def stage_repo(source: str | os.PathLike, folder: str | os.PathLike,
               repo_id: str | None = None) -> list[str]:
    """Lay ``source`` (a run or model folder) out in ``folder`` as its Hub repo; the file names.

    The model folder's files, a run's metrics, history and curves beside them, and a model
    card naming ``repo_id`` (a card someone wrote by hand, without seglab's marker, is kept).
    """
    from seglab.artifacts.model_card import CARD_FILE, is_generated_card, write_model_card

    model, run = _model_and_run(source)
    verify_model_files(model)  # before anything is staged
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for item in model.iterdir():
        if item.is_file():
            shutil.copy2(item, folder / item.name)
    for name in RUN_FILES if run is not None else ():
        if (run / name).is_file():
            shutil.copy2(run / name, folder / name)
    card = folder / CARD_FILE
    if not card.is_file() or is_generated_card(card):
        metrics = rundir.read_metrics(folder) if (folder / rundir.METRICS_FILE).is_file() else None
        write_model_card(folder, run_dir=None, metrics=metrics, repo_id=repo_id)
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def push_to_hub(
    source: str | os.PathLike,
    repo_id: str,
    *,
    local_dir: str | os.PathLike | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    api: Any = None,
) -> str:
    """Push a run folder (its ``model/``) or a model folder to the Hub repo ``repo_id``.

    Creates the repo (and the ``revision`` branch) when missing, uploads the staged folder
    (:func:`stage_repo`) in one commit and returns the commit's URL. With ``local_dir`` nothing
    is uploaded: the repo's files are written there (for review, or a Hub mirror) and its path
    is returned. ``api`` is an ``huggingface_hub.HfApi`` (default: ``HfApi(token=token)``,
    which honours ``HF_ENDPOINT``), e.g. one pointed at a private Hub.
    """
    repo_id = repo_id.removeprefix(HUB_PREFIX)
    if not valid_repo_id(repo_id):
        raise ConfigError(
            f"{repo_id!r} is not a Hub repo id: expected org/name (letters, digits, '-', '_', '.')"
        )
    if local_dir is not None:
        target = Path(local_dir)
        if target.exists() and any(target.iterdir()):
            raise ConfigError(f"cannot stage into {target}: the folder is not empty")
        stage_repo(source, target, repo_id)
        return str(target)
    _model_and_run(source)  # a bad source fails before any network call
    if offline():
        raise ConfigError(
            "pushing needs the Hub but offline mode (HF_HUB_OFFLINE) is on: unset it, or write "
            "the repo's files to a folder with local_dir (seglab push --to-dir)"
        )
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    errors = _hub_errors()
    with tempfile.TemporaryDirectory(prefix="seglab-push-") as tmp:
        files = stage_repo(source, tmp, repo_id)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=tmp, revision=revision, create_pr=create_pr,
                commit_message=commit_message or f"seglab: upload {', '.join(files)}",
            )
        except errors.HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise ModelError(
                    f"the Hub refused to write to {repo_id} ({status}): log in with hf auth "
                    "login, set HF_TOKEN or pass a token with write access"
                ) from exc
            raise ModelError(f"pushing to {repo_id} failed: {exc}") from exc
        except _no_token_error() as exc:
            raise ModelError(
                f"pushing to {repo_id} needs a Hub token with write access: log in with hf auth "
                "login, set HF_TOKEN or pass a token (seglab push --token)"
            ) from exc
        except _transport_errors() as exc:
            raise ModelError(
                f"pushing to {repo_id} failed ({exc}): check the connection and proxy settings"
            ) from exc
    return str(getattr(info, "commit_url", None) or getattr(info, "pr_url", None) or info)
