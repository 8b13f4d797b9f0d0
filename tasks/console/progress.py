"""Progress of long work (trtllm-build, trtexec, conversion, benchmarks) while it runs.

On a terminal one status line is rewritten in place every second: what runs, for how long, and
the last line of the tool's log (or what the in-process step reports).  Elsewhere (CI logs) the
same facts are logged every ``PLAIN_EVERY_S`` seconds, so a quiet 20-minute engine build still
shows it is alive without flooding the log.  The line is cleared when the work ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)

TTY_EVERY_S = 1.0
PLAIN_EVERY_S = 30.0
_TAIL_BYTES = 4096

Status = Callable[[], str]


def last_line(path: Path) -> str:
    """The last non-empty line of a log, after its last carriage return (tools redraw progress bars in place)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.rsplit("\r", 1)[-1].strip() for line in tail.splitlines()]
    return next((line for line in reversed(lines) if line), "")


def log_tail(path: Path) -> Status:
    return lambda: last_line(path)


def tree_size(path: Path) -> Status:
    """Bytes written so far under ``path``, for in-process writers (conversion)."""

    def status() -> str:
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
        return f"{total / 1e6:.0f} MB written"

    return status


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


class _Reporter:
    def __init__(self, what: str, status: Status, stream: TextIO, *, tty: bool, every_s: float) -> None:
        self.what, self.status, self.stream, self.tty, self.every_s = what, status, stream, tty, every_s
        self.started = time.monotonic()
        self.stop = threading.Event()

    def line(self) -> str:
        try:
            detail = self.status()
        except OSError:
            detail = ""
        elapsed = time.monotonic() - self.started
        return f"{self.what}: {elapsed:.0f} s" + (f" | {detail}" if detail else "")

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            if self.tty:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                self.stream.write("\r\x1b[K" + _fit(self.line(), width))
                self.stream.flush()
            else:
                log.info("still running: %s", self.line())

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class _ClearLine(logging.Filter):
    """Wipe the status line before a log record is printed over it (records go to the same stderr)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: ARG002 - logging API
        self.stream.write("\r\x1b[K")
        return True


@contextmanager
def _cleared_before_records(stream: TextIO, *, active: bool) -> Iterator[None]:
    handlers = [h for h in logging.getLogger("tasks").handlers if active and getattr(h, "stream", None) is stream]
    wipe = _ClearLine(stream)
    for handler in handlers:
        handler.addFilter(wipe)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(wipe)


@contextmanager
def watch(what: str, status: Status, *, stream: TextIO | None = None, every_s: float | None = None) -> Iterator[None]:
    """Report ``what`` with its elapsed time and ``status()`` until the block ends."""
    out = stream or sys.stderr
    tty = bool(getattr(out, "isatty", lambda: False)())
    reporter = _Reporter(what, status, out, tty=tty, every_s=every_s or (TTY_EVERY_S if tty else PLAIN_EVERY_S))
    thread = threading.Thread(target=reporter.run, name=f"progress {what}", daemon=True)
    thread.start()
    try:
        with _cleared_before_records(out, active=tty):
            yield
    finally:
        reporter.stop.set()
        thread.join()
        reporter.clear()
