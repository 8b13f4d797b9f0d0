"""Concurrent runs in one project: two builds at once, and a build under a running ``serve``."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

import pytest

from tasks.triton.processes import pick_free_ports
from tests.faults.runner import case_env, reap, settle, survivors
from tests.helpers import TINY_YAML, DoitRun, communicate_or_kill, copy_project, doit_argv, edit, run_doit

COMMAND = ("build:tiny", "target=cpu")


def start(project: Path, *args: str, stderr: int | IO[str] = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        doit_argv(*args), cwd=project, env=case_env(project), stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True
    )


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> DoitRun:
    out, err = communicate_or_kill(proc, timeout)
    return DoitRun(proc.returncode, out, err or "")


def error_lines(run: DoitRun) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("ERROR:")]


@pytest.fixture
def project(tiny_bert: Path, tmp_path: Path) -> Path:
    return copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})


def test_two_builds_started_together_one_wins_and_the_other_names_it(project: Path) -> None:
    """Started in the same instant, the loser may read the lock before the winner wrote its pid: still named."""
    first, second = start(project, *COMMAND), start(project, *COMMAND)
    try:
        runs = {first.pid: finish(first), second.pid: finish(second)}
    finally:
        reap(survivors(project))
    winners = [pid for pid, run in runs.items() if run.rc == 0]
    assert len(winners) == 1, {pid: (run.rc, run.stderr[-500:]) for pid, run in runs.items()}
    loser = next(run for pid, run in runs.items() if pid not in winners)
    assert loser.rc == 3
    assert error_lines(loser) == [error_lines(loser)[0]], loser.stderr
    assert f"pid {winners[0]}" in error_lines(loser)[0], error_lines(loser)
    assert "Traceback" not in loser.stderr


def test_a_build_in_flight_refuses_a_second_naming_its_pid(project: Path) -> None:
    first = start(project, *COMMAND)
    try:
        deadline = time.monotonic() + 300
        while not list((project / "build/tiny").glob(".export.tmp-*")):
            assert first.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = run_doit(project, *COMMAND, env=case_env(project))
    finally:
        built = finish(first)
    assert second.rc == 3
    assert len(error_lines(second)) == 1, second.stderr
    assert error_lines(second)[0].startswith("ERROR: build/.lock:")
    assert f"pid {first.pid}" in error_lines(second)[0]
    assert built.rc == 0, built.stderr[-2000:]
    assert settle(project) == []


def ready(port: int, path: str = "/v2/health/ready") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def wait_for(text: str, log: Path, proc: subprocess.Popen[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text(encoding="utf-8", errors="replace").lower():
            return True
        assert proc.poll() is None, log.read_text(encoding="utf-8", errors="replace")[-3000:]
        time.sleep(0.3)
    return False


def test_a_build_under_a_running_serve_keeps_it_serving_and_says_so(project: Path) -> None:
    """serve keeps answering while a build swaps repos/tiny; afterwards it reloads or logs that it is outdated."""
    assert run_doit(project, *COMMAND, env=case_env(project)).rc == 0
    ports = pick_free_ports()
    log = project / "serve.log"
    with log.open("w", encoding="utf-8") as sink:
        serve = start(
            project,
            "serve:tiny",
            "target=cpu",
            f"http_port={ports.http}",
            f"grpc_port={ports.grpc}",
            f"metrics_port={ports.metrics}",
            stderr=sink,
        )
    try:
        assert wait_for("tiny ready", log, serve, 180), log.read_text()
        edit(project / "models/tiny.yaml", "triton:\n  max_batch_size: 8\n", "triton:\n  max_batch_size: 8\n  instance_count: 2\n")
        build = run_doit(project, *COMMAND, env=case_env(project))
        assert build.rc == 0, build.stdout + build.stderr[-2000:]
        assert "config:tiny: built in" in build.stderr  # the repository really changed under the server
        assert ready(ports.http), "the server stopped answering after the build"
        told = wait_for("reload", log, serve, 60) or wait_for("outdated", log, serve, 1)
        assert told, f"serve neither reloaded nor said it is outdated:\n{log.read_text()[-2000:]}"
        assert ready(ports.http, "/v2/models/tiny/ready")
    finally:
        serve.send_signal(signal.SIGINT)
        finish(serve, 90)
        left = settle(project, 10)
        reap(survivors(project))
    assert left == []
    assert not ready(ports.http)
