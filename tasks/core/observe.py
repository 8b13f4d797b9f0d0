# ruff: noqa: PTH100, PTH116, PTH120 - plain strings: this runs inside every open() while recording
"""What a computation read from the file system: the files it opened and the folders it listed.

Loading the graph reads model files, checkpoint configs, package metadata, Hub cache refs and
corpus files, in code spread over many modules.  Listing those by hand would miss one sooner or
later, so they are recorded through Python's audit hooks (``open``, ``os.listdir``,
``os.scandir``), each with its stat signature taken *before* the read: a file changed after that
no longer matches, so a snapshot built from it is never reused.  A file's folder is recorded too,
so a file appearing beside it (a new shard, a new Hub ref) is seen.

What the hooks cannot see is declared: paths only probed for existence (:func:`note`) and
reads that ask the network (:func:`volatile`), which makes a recording unusable for reuse.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (mtime_ns, size, inode, is_dir); None for a path that did not exist.
Signature = tuple[int, int, int, bool] | None
# Code is keyed by the code version, packages by their folder listings: imports are not inputs.
_IGNORED_SUFFIXES = (".py", ".pyc", ".so", ".pth")


@dataclass
class Recording:
    """Paths read while recording, with the signature each had when first read."""

    paths: dict[str, Signature] = field(default_factory=dict)
    volatile: list[str] = field(default_factory=list)
    ignored: tuple[str, ...] = ()

    def add(self, path: str) -> None:
        if path in self.paths or path.startswith(self.ignored):
            return
        self.paths[path] = signature(path)


_ACTIVE: list[Recording] = []
_INSTALLED: list[bool] = []


def signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, stat.S_ISDIR(st.st_mode))


def _absolute(raw: object) -> str | None:
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if not isinstance(raw, str | os.PathLike):
        return None  # a file descriptor: its path was recorded when it was opened
    return os.path.abspath(os.fspath(raw))


def _writing(args: tuple[Any, ...]) -> bool:
    mode, flags = (args[1], args[2]) if len(args) >= 3 else (None, 0)  # noqa: PLR2004 - open's (path, mode, flags)
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _ACTIVE:
        return
    if event == "open":
        path = _absolute(args[0])
        if path is None or path.endswith(_IGNORED_SUFFIXES) or _writing(args):
            return
        _ACTIVE[-1].add(path)
        _ACTIVE[-1].add(os.path.dirname(path))
    elif event in {"os.listdir", "os.scandir"}:
        path = _absolute(args[0] if args and args[0] is not None else ".")
        if path is not None:
            _ACTIVE[-1].add(path)


@contextmanager
def recording(ignored: tuple[Path, ...] = ()) -> Iterator[Recording]:
    """Record what the block reads; paths under ``ignored`` (the project's own caches) are left out."""
    if not _INSTALLED:
        # An audit hook cannot be removed; while nothing records it returns at once.
        sys.addaudithook(_hook)
        _INSTALLED.append(True)
    record = Recording(ignored=tuple(os.path.abspath(p) + os.sep for p in ignored))
    _ACTIVE.append(record)
    try:
        yield record
    finally:
        _ACTIVE.pop()


def note(*paths: Path | str) -> None:
    """Record paths that are only probed (``is_file``, ``shutil.which``): whether they exist matters."""
    if _ACTIVE:
        for path in paths:
            _ACTIVE[-1].add(os.path.abspath(path))


def volatile(why: str) -> None:
    """The recorded computation asked something outside the file system (the Hub): never reuse it."""
    if _ACTIVE:
        _ACTIVE[-1].volatile.append(why)


def changed(paths: Mapping[str, Signature]) -> str | None:
    """The first recorded path whose signature is no longer the same, or None."""
    return next((path for path, sig in paths.items() if signature(path) != sig), None)
