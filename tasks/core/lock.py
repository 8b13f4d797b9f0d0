"""One doit run per project at a time.

doit keeps its dependency DB in memory and writes it when the run ends; two runs
sharing it lose or corrupt state, so a second run is refused with one line.
Signal handling (SIGTERM like Ctrl-C, critical steps held) is ``tasks.core.interrupts``.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tasks.core.errors import UserError

_PATH = Path("build/.lock")
_HANDLE: IO[str] | None = None

# doit commands that only read state; everything else (run is the default) takes the lock.
READ_ONLY_COMMANDS = frozenset({"list", "info", "help", "dumpdb", "tabcompletion", "graph"})


def configure(path: Path) -> None:
    global _PATH  # noqa: PLW0603 - process-wide setting made once by dodo.py
    _PATH = path


def command_mutates(argv: Sequence[str]) -> bool:
    """True unless the doit command in ``argv`` is one of the read-only ones."""
    for arg in argv:
        if arg.startswith("-") or "=" in arg:
            continue
        return arg not in READ_ONLY_COMMANDS
    return True


def hold() -> None:
    """Take the project lock for the rest of the process (idempotent)."""
    global _HANDLE  # noqa: PLW0603 - the lock lives as long as the process
    if _HANDLE is not None:
        return
    _PATH.parent.mkdir(parents=True, exist_ok=True)
    handle = _PATH.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown pid"
        handle.close()
        msg = f"another doit run is using this project ({holder}); wait for it to finish"
        raise UserError(str(_PATH), msg) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
    handle.flush()
    _HANDLE = handle


def release() -> None:
    """Let other runs start (``serve`` does this once its repository is built)."""
    global _HANDLE  # noqa: PLW0603
    if _HANDLE is not None:
        fcntl.flock(_HANDLE, fcntl.LOCK_UN)
        _HANDLE.close()
        _HANDLE = None
