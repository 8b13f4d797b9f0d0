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
# The holder writes its pid right after taking the lock: a refused run waits this long to read it.
_HOLDER_WAIT_S = 2.0
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
    # Read-write without append: the holder line is written over the old one at offset 0.
    handle = os.fdopen(os.open(_PATH, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(handle)
        handle.close()
        msg = f"another doit run is using this project ({holder}); wait for it to finish"
        raise UserError(str(_PATH), msg) from None
    # Written over the old text, then cut to length: a reader never finds the file empty.
    handle.seek(0)
    handle.write(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
    handle.truncate()
    handle.flush()
    _HANDLE = handle


def _holder(handle: IO[str]) -> str:
    """The holder's line; read again for a moment while the holder has not written it yet."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        handle.seek(0)
        text = handle.read().strip()
        if text or time.monotonic() >= deadline:
            return text or "unknown pid"
        time.sleep(0.02)


def release() -> None:
    """Let other runs start (``serve`` does this once its repository is built)."""
    global _HANDLE  # noqa: PLW0603
    if _HANDLE is not None:
        fcntl.flock(_HANDLE, fcntl.LOCK_UN)
        _HANDLE.close()
        _HANDLE = None
