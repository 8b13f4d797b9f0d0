"""``/proc/<pid>/stat``: the fixed fields of a process, read the one way (after its ``(comm)``, which may hold spaces)."""

from __future__ import annotations

from pathlib import Path

# Indexes into :func:`fields` (the stat fields after ``pid (comm)``; proc(5) numbers them from 3).
STATE, PGRP, SESSION, UTIME, STIME, STARTTIME = 0, 2, 3, 11, 12, 19


def fields(pid: int | str) -> list[str] | None:
    """The fields after ``(comm)`` of process ``pid`` (``self`` for this one), or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()
