"""Exceptions with plain-words messages; the CLI prints them without a traceback."""

from __future__ import annotations


class SeglabError(Exception):
    """Base class: the message names the file or value and what is wrong."""


class DataError(SeglabError):
    """A dataset file, layout or class table is missing, unreadable or inconsistent."""


class ModelError(SeglabError):
    """A model name, option, weight file or checkpoint is unknown or unusable."""


class ConfigError(SeglabError):
    """A recipe or command-line value is invalid."""
