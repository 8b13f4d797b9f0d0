"""A record of every ``tritonserver`` this project starts, and the reaper of runs whose launcher died.

A launcher killed with SIGKILL cannot stop its server: the parent-death signal asks the server to
stop, but its python-backend stubs, its private ``/tmp/triton-backends-*`` directory and its
``/dev/shm`` regions can outlive it.  Each start writes ``<runs dir>/<server pid>.json`` naming the
launcher (pid and start time, so a reused pid is not mistaken for it), the server, the backends
directory and the shm-region prefix, which holds a random token and so names this run's regions
and processes exactly.  :func:`reap` removes what dead runs left, never anything by a name pattern
alone: a process is killed only when its command line carries the run's prefix, a file is removed
only when its name starts with it, a directory only when the record names it.

Kept free of heavy imports: ``dodo.py`` reaps at every doit start (well under a millisecond when
there is nothing to do).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from tasks.core import procstat

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("build/.cache/triton-runs")
SHM_DIR = Path("/dev/shm")  # noqa: S108 - where POSIX shm regions live on Linux
SHM_PREFIX = "triton_python_backend_shm_region_"
_KILL_WAIT_S = 5.0
_TOKEN_CHARS = 8


def start_time(pid: int) -> int | None:
    """Return the kernel start time of a live (non-zombie) *pid*, None if there is none."""
    found = procstat.fields(pid)
    return None if found is None or found[procstat.STATE] == "Z" else int(found[procstat.STARTTIME])


def _path(runs_dir: Path, server_pid: int) -> Path:
    return runs_dir / f"{server_pid}.json"


def record(runs_dir: Path, server_pid: int, backends_dir: Path | None, shm_prefix: str) -> Path:
    """Write the record of a server this process just started; return its path."""
    content = {
        "owner_pid": os.getpid(),
        "owner_start": start_time(os.getpid()),
        "server_pid": server_pid,
        "server_start": start_time(server_pid),
        "backends_dir": str(backends_dir) if backends_dir is not None else None,
        "shm_prefix": shm_prefix,
    }
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = _path(runs_dir, server_pid)
    work = path.with_name(f".{path.name}.tmp")
    work.write_text(json.dumps(content))
    work.replace(path)
    return path


def forget(path: Path | None) -> None:
    """Drop the record of a server that was stopped and cleaned up by its launcher."""
    if path is not None:
        path.unlink(missing_ok=True)


def _alive_as(pid: object, started: object) -> bool:
    return isinstance(pid, int) and started is not None and start_time(pid) == started


def _run_pids(prefix: str) -> list[int]:
    """Live processes whose command line carries *prefix*: the orphaned server and its stubs."""
    needle = prefix.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes() and start_time(int(entry.name)) is not None:
                found.append(int(entry.name))
    return found


def _kill(pids: list[int]) -> list[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_WAIT_S
    while (left := [pid for pid in pids if start_time(pid) is not None]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _reap_one(path: Path, content: dict[str, Any]) -> None:
    prefix = str(content.get("shm_prefix") or "")
    # A prefix without the launcher's pid and random token could match other runs: never used.
    if prefix.startswith(SHM_PREFIX) and len(prefix) > len(SHM_PREFIX) + _TOKEN_CHARS:
        left = _kill(_run_pids(prefix))
        if left:
            log.warning("processes %s of a dead tritonserver run survived SIGKILL", left)
        for region in SHM_DIR.glob(f"{prefix}*"):
            region.unlink(missing_ok=True)
    backends = content.get("backends_dir")
    if isinstance(backends, str) and Path(backends).name.startswith("triton-backends-"):
        shutil.rmtree(backends, ignore_errors=True)
    path.unlink(missing_ok=True)
    log.info("removed what tritonserver %s left when its launcher died", content.get("server_pid"))


def reap(runs_dir: Path = DEFAULT_DIR) -> int:
    """Clean up every recorded run whose launcher is gone; return how many were reaped.

    A run whose launcher still lives is left alone: that process stops its own server.
    """
    try:
        names = [entry.name for entry in os.scandir(runs_dir) if entry.name.endswith(".json")]
    except FileNotFoundError:
        return 0
    reaped = 0
    for name in names:
        path = runs_dir / name
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(content, dict) or _alive_as(content.get("owner_pid"), content.get("owner_start")):
            continue
        _reap_one(path, content)
        reaped += 1
    return reaped
