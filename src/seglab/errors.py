"""Exceptions with plain-words messages; the CLI prints them without a traceback."""

from __future__ import annotations

import re

# torch's DataLoader re-raises a worker's exception in the main process as
# ``type(exc)("Caught <Name> in DataLoader worker process N.\nOriginal Traceback ...")``.
_WORKER_HEADER = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal ")


def unwrap_worker_message(message: str) -> str:
    """The original message of an exception that torch re-raised from a DataLoader worker.

    Any other message is returned unchanged. The worker's traceback ends with a line
    ``module.Name: <message>``; the message may span several lines.
    """
    match = _WORKER_HEADER.match(message)
    if match is None:
        return message
    name = re.escape(match.group(1))
    # The last line that starts with the exception's (qualified) name opens its message.
    starts = list(re.finditer(rf"^(?:[\w.]+\.)?{name}: ", message, flags=re.MULTILINE))
    if not starts:
        return message
    return message[starts[-1].end():].rstrip("\n")


class SeglabError(Exception):
    """Base class: the message names the file or value and what is wrong.

    Raised inside a DataLoader worker, the error reaches the main process with its own
    message; the worker's traceback is kept in ``worker_traceback`` (None otherwise).
    """

    worker_traceback: str | None = None

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            plain = unwrap_worker_message(args[0])
            if plain != args[0]:
                self.worker_traceback = args[0]
                args = (plain,)
        super().__init__(*args)


class DataError(SeglabError):
    """A dataset file, layout or class table is missing, unreadable or inconsistent."""


class ModelError(SeglabError):
    """A model name, option, weight file or checkpoint is unknown or unusable."""


class ConfigError(SeglabError):
    """A recipe or command-line value is invalid."""
