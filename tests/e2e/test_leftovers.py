"""A launcher killed with SIGKILL while Triton loads its models: the next start removes exactly what that run left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tasks.triton import runs
from tests.e2e.test_launcher import ECHO_CONFIG, ECHO_MODEL, _add_model, _pids_mentioning
from tests.helpers import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

# initialize() outlasts the test: the kill always lands while the model loads.
SLOW_MODEL = """\
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(120)

    def execute(self, requests):
        return []
"""

# The test stops this launcher with SIGINT, as a Ctrl-C would: a suite started as a shell's
# background job inherits SIGINT ignored, so the launcher takes Python's own handler back.
LAUNCH = """\
import signal, sys, time
from pathlib import Path
from tasks.triton.launcher import TritonServer
signal.signal(signal.SIGINT, signal.default_int_handler)
with TritonServer(Path(sys.argv[1]), "cpu", Path(sys.argv[2]), startup_timeout_s=60):
    time.sleep(600)
"""

DECOY_DIR = Path("/tmp/triton-backends-decoy")  # noqa: S108 - the name another tool's run could have
DECOY_SHM = runs.SHM_DIR / f"{runs.SHM_PREFIX}decoy"


@pytest.fixture
def decoys() -> Iterator[None]:
    DECOY_DIR.mkdir(exist_ok=True)
    DECOY_SHM.write_bytes(b"not ours")
    yield
    shutil.rmtree(DECOY_DIR, ignore_errors=True)
    DECOY_SHM.unlink(missing_ok=True)


def _launch(workdir: Path, repo: Path) -> subprocess.Popen[bytes]:
    script = workdir / "launch.py"
    script.write_text(LAUNCH)
    # Run from workdir, so the records land in workdir/build/.cache/triton-runs, not in the checkout.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(script), str(repo), str(workdir / "server.log")], cwd=workdir, env=env)


def _option(pid: int, name: str) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return next(arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{name}="))


def _wait_for_loading_stub(repo: Path, timeout_s: float = 60) -> tuple[int, list[int]]:
    """Return (server pid, stub pids) once a stub runs the slow model's initialize()."""
    model = str(repo / "slow" / "1" / "model.py")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stubs = _pids_mentioning(model)
        servers = _pids_mentioning(f"--model-repository={repo}")
        if stubs and servers:
            return servers[0], stubs
        time.sleep(0.2)
    pytest.fail("no python-backend stub started")


def test_next_start_removes_what_a_killed_launcher_left(tmp_path: Path, decoys: None) -> None:
    del decoys
    slow = tmp_path / "slow-repo"
    _add_model(slow, "slow", ECHO_CONFIG.replace('"echo"', '"slow"'), SLOW_MODEL)
    launcher = _launch(tmp_path, slow)
    server, stubs = _wait_for_loading_stub(slow)
    backends = Path(_option(server, "backend-directory"))
    prefix = _option(server, "backend-config").rpartition("shm-region-prefix-name=")[2]
    launcher.kill()
    launcher.wait()

    echo = tmp_path / "echo-repo"
    _add_model(echo, "echo", ECHO_CONFIG, ECHO_MODEL)
    second = _launch(tmp_path, echo)  # the next start, in the same project
    try:
        deadline = time.monotonic() + 30
        while (_pids_mentioning(str(slow)) or backends.exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _pids_mentioning(str(slow))
        assert left == [], f"processes of the killed run survived: {left} (stubs were {stubs})"
        assert not backends.exists()
        assert sorted(runs.SHM_DIR.glob(f"{prefix}*")) == []
        assert DECOY_DIR.is_dir()
        assert DECOY_SHM.read_bytes() == b"not ours"
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=60)
        for pid in _pids_mentioning(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)
