"""tasks.triton.runs: a dead launcher's run is reaped exactly; a live one and everything unrecorded are left alone."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from tasks.triton import runs


def _prefix() -> str:
    return f"{runs.SHM_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_"


def _holder(text: str) -> subprocess.Popen[bytes]:
    """A process whose command line carries *text*, as a stub's carries its shm region name."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", text])


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _write(runs_dir: Path, owner: int, owner_start: int | None, prefix: str, backends: Path) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / f"{owner + 1}.json"
    content = {"owner_pid": owner, "owner_start": owner_start, "server_pid": owner + 1, "shm_prefix": prefix, "backends_dir": str(backends)}
    path.write_text(json.dumps(content))
    return path


def test_dead_run_is_reaped_and_nothing_else(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    dead, live, decoy = _prefix(), _prefix(), _prefix()
    backends = {name: tmp_path / f"triton-backends-{name}" for name in ("dead", "live", "decoy")}
    for folder in backends.values():
        folder.mkdir()
    regions = {name: runs.SHM_DIR / f"{prefix}region" for name, prefix in (("dead", dead), ("live", live), ("decoy", decoy))}
    for region in regions.values():
        region.write_bytes(b"x")
    procs = {name: _holder(f"{prefix}region") for name, prefix in (("dead", dead), ("live", live), ("decoy", decoy))}
    try:
        dead_record = _write(runs_dir, _dead_pid(), 1, dead, backends["dead"])
        # A live pid with another start time is a reused pid: its launcher is gone too.
        reused = _write(runs_dir, os.getpid(), 1, _prefix(), tmp_path / "triton-backends-gone")
        live_record = runs.record(runs_dir, procs["live"].pid, backends["live"], live)
        time.sleep(0.2)  # the holders are past exec, their command lines in place
        assert runs.reap(runs_dir) == 2
        assert procs["dead"].wait(timeout=5) < 0
        assert procs["live"].poll() is None
        assert procs["decoy"].poll() is None
        assert not backends["dead"].exists()
        assert backends["live"].is_dir()
        assert backends["decoy"].is_dir()
        assert not regions["dead"].exists()
        assert regions["live"].exists()
        assert regions["decoy"].exists()
        assert not dead_record.exists()
        assert not reused.exists()
        assert live_record.exists()
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        for region in regions.values():
            region.unlink(missing_ok=True)


def test_nothing_recorded_costs_almost_nothing(tmp_path: Path) -> None:
    started = time.perf_counter()
    assert runs.reap(tmp_path / "missing") == 0
    assert time.perf_counter() - started < 0.005
