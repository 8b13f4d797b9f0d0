"""SIGTERM handled like Ctrl-C, and short critical steps shielded from both.

doit saves nothing when killed by SIGTERM (CI cancel, Kubernetes, Slurm); turning
SIGTERM into KeyboardInterrupt makes it save every task that finished.  Steps that
must not stop half-way (publish, cleanup, importing torch) hold the signal until done.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType, TracebackType

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
