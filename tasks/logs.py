"""Console logging for the ``tasks`` loggers (progress lines on stderr)."""

from __future__ import annotations

import logging
import sys

from tasks.errors import UserError

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
