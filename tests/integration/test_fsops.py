from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tasks.core import fsops


def test_stale_work_dirs_of_dead_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / f".engine.tmp-{dead.stdout.strip()}"
    live = tmp_path / f".engine.tmp-{os.getpid()}"
    stale.mkdir()
    live.mkdir()
    fsops.remove_stale_tmp(tmp_path / "engine")
    assert not stale.exists()
    assert live.exists()
