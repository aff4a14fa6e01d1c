"""YAML read with bounds, and input echoed in messages cut short.

A 1 KB YAML "alias bomb" (``a: &a [x, x]; b: &b [*a, *a]; ...``) expands to gigabytes once
anything walks it (pydantic, ``repr`` in an error message, a model builder). Recipes and study
files have no use for more than a handful of aliases, so a document with more than
:data:`MAX_ALIASES`, more than :data:`MAX_NODES` values once expanded, or a recursive alias is
refused before any Python value is built from it. :func:`short_repr` is the one way an error
message quotes a user's value: bounded in depth, length and size whatever the value holds.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

from seglab.errors import ConfigError

MAX_ALIASES = 100
MAX_NODES = 100_000  # values in the document once every alias is expanded
MAX_ECHO = 200  # characters of a user's value quoted in an error message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts alias references while composing and stops past the limit."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _TooManyAliases(mark.line + 1)
        return super().compose_node(parent, index)


class _TooManyAliases(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _SelfAlias(_TooManyAliases):
    pass


class YamlTooLarge(ConfigError):
    """A YAML document with more aliases than :data:`MAX_ALIASES`."""


def load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` of ``text`` with at most :data:`MAX_ALIASES` alias references.

    ``source`` names the input in the errors (``recipe file runs/x/recipe.yaml``). A syntax
    error or too many aliases is a :class:`ConfigError`.
    """
    try:
        loader = _BoundedLoader(text)  # its reader already refuses control characters
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {short_text(str(exc), 600)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = _expanded_size(node, {}, set())
        except _SelfAlias as exc:
            raise YamlTooLarge(f"{source}: a YAML alias refers to itself (line {exc.line}): "
                               "refused") from None
        if size > MAX_NODES:
            raise YamlTooLarge(f"{source} expands to more than {MAX_NODES:,} values through its "
                               "YAML aliases (*name): refused")
        return loader.construct_document(node)
    except _TooManyAliases as exc:
        raise YamlTooLarge(
            f"{source} uses more than {MAX_ALIASES} YAML aliases (*name), near line "
            f"{exc.line}: refused (a few lines of aliases can expand to gigabytes)"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {short_text(str(exc), 600)}") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Values under ``node`` with aliases expanded (shared nodes counted once per use)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _SelfAlias(node.start_mark.line + 1)
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            size += _expanded_size(child, memo, active)
            if size > MAX_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo, active) + _expanded_size(v, memo, active)
            if size > MAX_NODES:
                break
    active.discard(key)
    memo[key] = size
    return size


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxstring = _REPR.maxother = MAX_ECHO
_REPR.maxlong = 60


def short_repr(value: Any, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` bounded in depth, items and characters (never walks a huge value)."""
    return short_text(_REPR.repr(value), limit)


def short_text(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
