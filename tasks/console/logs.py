"""Console logging for the ``tasks`` loggers (progress lines on stderr)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tasks.core.errors import UserError

LEVELS = ("debug", "info", "warning", "error")


def configure(level: str) -> None:
    """``log=debug`` on the doit command line also shows every file that is actually hashed."""
    if level.lower() not in LEVELS:
        raise UserError("log", f"expected one of {', '.join(LEVELS)}, got {level!r}")
    logger = logging.getLogger("tasks")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False  # tool libraries keep their own, quieter, logging


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send everything written to stdout/stderr (Python and native code alike) to ``path``.

    Exporters print progress from C++ and from logging handlers bound to the
    original stderr at import time; only a file-descriptor redirect catches all of it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with path.open("a", encoding="utf-8") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield
            sys.stdout.flush()
            sys.stderr.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
