"""One doit run per project at a time, and SIGTERM handled like Ctrl-C.

doit keeps its dependency DB in memory and writes it when the run ends; two runs
sharing it lose or corrupt state, so a second run is refused with one line.  doit
also saves nothing when killed by SIGTERM (CI cancel, Kubernetes, Slurm); turning
SIGTERM into KeyboardInterrupt makes it save every task that finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
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


_SHIELD = {"depth": 0, "pending": False, "requested": False}
_RECEIVED: list[str] = []


def _interrupt(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal API
    _SHIELD["requested"] = True
    if not _RECEIVED:
        _RECEIVED.append(signal.Signals(signum).name)
    if _SHIELD["depth"]:
        _SHIELD["pending"] = True
        return
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Stop here if a SIGTERM/Ctrl-C came in, even when its KeyboardInterrupt got lost.

    Python runs a signal handler wherever the interpreter happens to be, finalizers
    (``__del__``, weakref callbacks during garbage collection) included, and there an
    exception is printed as "ignored" and dropped: a long action such as an ONNX export
    would then finish and be published as if nothing had been asked.
    """
    if _SHIELD["requested"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGTERM/Ctrl-C until a short critical step (publish, cleanup) is done.

    A KeyboardInterrupt in the middle of removing a work dir or swapping an output in
    would leave debris for the next run to sort out; these steps take milliseconds.
    """
    _SHIELD["depth"] += 1
    try:
        yield
    finally:
        _SHIELD["depth"] -= 1
    if not _SHIELD["depth"] and _SHIELD["pending"]:
        _SHIELD["pending"] = False
        raise KeyboardInterrupt


def import_held(*modules: str) -> None:
    """Import native-extension packages with SIGTERM/Ctrl-C held until they are loaded.

    Importing torch runs C++ initialisers that call back into Python
    (``torch._C._c10d_init``); a KeyboardInterrupt raised inside such a callback cannot
    unwind through C++, so the process aborts (SIGABRT) and doit saves the state of
    none of the tasks that finished.  The imports take seconds; the signal is acted on
    as soon as they are done.
    """
    with uninterrupted():
        for name in modules:
            importlib.import_module(name)


def _report_interrupt(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """A stop the user asked for is reported in one line, not as doit's traceback."""
    if not issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    what = _RECEIVED[0] if _RECEIVED else "SIGINT"
    sys.stderr.write(f"stopped by {what}: finished tasks are saved; the same command goes on from there\n")


def save_state_on_sigterm() -> None:
    """SIGTERM and SIGINT both become KeyboardInterrupt, held back inside ``uninterrupted``.

    Python still exits as killed by SIGINT (status 130), as a shell expects of Ctrl-C.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    sys.excepthook = _report_interrupt
