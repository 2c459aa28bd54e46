"""The shapes of the TOML document, checked before any value in it is read.

TOML has types, and a file can give any key any of them: ``upstreams = 5``, ``proxy = 5``,
``routes = [5]``, ``health = "x"``. The loader reads sections as tables and ``[[upstreams]]``
as a list of tables; handed something else it would fail deep inside with a ``TypeError``
that names nothing (and that a reload would not take for a refused file). These helpers
return the part asked for, or raise :class:`~service.settings.loading.SettingsError`'s base
(:class:`ShapeError`, a ``ValueError``) naming the key, what it must be and what it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


class ShapeError(ValueError):
    """A part of the document that has the wrong TOML type; the message names its key."""


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int to isinstance
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (Mapping, "a table"),
    ((dt.date, dt.time), "a date or time"),
)


def kind_of(value: Any) -> str:
    """The TOML name of ``value``'s type, for a message."""
    return next((name for kind, name in _KINDS if isinstance(value, kind)), type(value).__name__)


def _wrong(label: str, expected: str, value: Any) -> ShapeError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return ShapeError(f"{label} must be {expected}, not {kind_of(value)} ({shown})")


def table(document: Mapping[str, Any], key: str, label: str) -> Mapping[str, Any]:
    """``document[key]`` when it is a table; an empty one when it is absent."""
    value = document.get(key, {})
    if not isinstance(value, Mapping):
        raise _wrong(label, "a table", value)
    return value


def tables(document: Mapping[str, Any], key: str, label: str) -> list[Mapping[str, Any]]:
    """``document[key]`` when it is an array of tables (``[[key]]``); empty when absent."""
    value = document.get(key, [])
    if not isinstance(value, list):
        raise _wrong(label, "an array of tables", value)
    for position, item in enumerate(value, 1):
        if not isinstance(item, Mapping):
            raise _wrong(f"{label} #{position}", "a table", item)
    return value


def string(item: Mapping[str, Any], key: str, label: str) -> str | None:
    """``item[key]`` when it is a string; None when it is absent."""
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise _wrong(f"{label} {key}", "a string", value)
    return value
