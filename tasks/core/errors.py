"""Errors a user can cause, reported as one line without a traceback."""

from __future__ import annotations

import reprlib

from doit.exceptions import InvalidDodoFile


class UserError(InvalidDodoFile):  # type: ignore[misc]  # doit ships no type hints
    """A mistake the user can fix: bad YAML, a missing file, a tool that failed.

    It subclasses doit's ``InvalidDodoFile`` because doit prints those as a single
    ``ERROR: <message>`` line and exits with status 3 when they are raised while
    the task list is being built.  Inside a task action the stage runner turns it
    into a ``TaskFailed`` carrying the same single line.
    """

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


class YamlError(UserError):
    """A problem in one key of a model file: ``models/x.yaml: engine.k: expected ...``."""

    def __init__(self, path: str, key: str, message: str) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(where, message)
        self.path = path
        self.key = key


# How much of a user's value a message may echo: enough to recognise it, never a flood.
SHOWN_CHARS = 120
_REPR = reprlib.Repr()
_REPR.maxlevel = 3  # an alias bomb is a deep tree: never walk more of it than is shown
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 8
_REPR.maxstring = 40  # strings inside a list or mapping
_REPR.maxother = SHOWN_CHARS
_REPR.maxlong = 40
_BIG_INT_BITS = 256  # repr of a 5,000-digit int raises ValueError (Python's int/str digit limit)


def shown(value: object) -> str:
    """``repr(value)`` for a message, cut to ~120 characters: ``'aaaa…' (5000 chars)``.

    Built with ``reprlib`` so a huge or deeply nested value (an alias bomb) is never
    formatted in full on the way to being cut.
    """
    if isinstance(value, str):
        return repr(value) if len(value) <= SHOWN_CHARS else f"{value[:SHOWN_CHARS]!r}… ({len(value):,} chars)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _BIG_INT_BITS:
        return f"an integer of about {int(value.bit_length() * 0.30103):,} digits"
    text = _REPR.repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}…"


def shown_key(key: str) -> str:
    """A key as a message names it: a pasted 5,000-character key is cut like a value."""
    return key if len(key) <= SHOWN_CHARS // 2 else f"{key[: SHOWN_CHARS // 2]}…({len(key):,} chars)"


def shown_text(value: object) -> str:
    """``str(value)`` (a path, a name) cut like ``shown`` but without quotes."""
    text = str(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}…({len(text):,} chars)"
