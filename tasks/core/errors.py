"""Errors a user can cause, reported as one line without a traceback."""

from __future__ import annotations

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
