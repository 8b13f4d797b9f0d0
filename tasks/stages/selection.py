"""The models a doit command line names: ``doit build:m`` loads ``m`` (and an ensemble's members), not the zoo.

Anything this module does not recognise (another doit command, an unknown option, a bare
``build`` or ``engine``) means the whole graph: a command line is only narrowed when it
certainly names tasks of particular models.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.spec.sweep import base_name

# doit commands whose positional arguments are task names (``run`` is the default command).
_TASK_COMMANDS = frozenset({"run", "info", "forget", "clean", "ignore"})
_OTHER_COMMANDS = frozenset({"list", "auto", "dumpdb", "strace", "tabcompletion", "help", "reset-dep"})
# doit options that take the next argument as their value, and those that take none.
_WITH_VALUE = frozenset(
    {
        *("-P", "--parallel-type", "--backend", "--check_file_uptodate", "--db-file", "--failure-verbosity", "-d", "--dir"),
        *("-f", "--file", "-n", "--process", "-o", "--output-file", "-r", "--reporter", "-v", "--verbosity"),
    }
)
_SWITCHES = frozenset(
    ("--auto-delayed-regex", "--pdb", "-a", "--always-execute", "-c", "--continue", "-k", "--seek-file", "-s", "--single", "--no-status")
)


def _option(arg: str) -> int | None:
    """How many arguments an option spans (1 or 2), or None for an option not known here."""
    name = arg.split("=", 1)[0]
    if name in _SWITCHES or (name in _WITH_VALUE and "=" in arg):
        return 1
    if name in _WITH_VALUE:
        return 2
    return None


def named_models(argv: Sequence[str], basenames: frozenset[str]) -> frozenset[str] | None:
    """The base names of the models ``argv``'s tasks belong to, or None when it may concern every model."""
    models: set[str] = set()
    command: str | None = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("-"):
            span = _option(arg)
            if span is None:
                return None
            index += span
            continue
        index += 1
        if "=" in arg:
            continue  # a doit variable (target=cpu)
        if command is None and arg in _TASK_COMMANDS | _OTHER_COMMANDS:
            command = arg
            continue
        basename, colon, model = arg.partition(":")
        if not colon or not model or basename not in basenames:
            return None
        models.add(base_name(model))
    if command not in {None, *_TASK_COMMANDS} or not models:
        return None
    return frozenset(models)
