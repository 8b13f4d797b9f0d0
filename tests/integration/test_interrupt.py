"""Killed and concurrent runs: nothing half-built looks finished, finished stages are not redone."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import TINY_YAML, DoitRun, copy_project, doit_argv, doit_env, run_doit


def start_build(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        doit_argv("build:tiny", "target=cpu"),
        cwd=project,
        env=doit_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_export_in_flight(project: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not list((project / "build/tiny").glob(".export.tmp-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str]) -> DoitRun:
    out, err = proc.communicate(timeout=300)
    return DoitRun(proc.returncode, out, err)


def test_sigterm_saves_finished_stages_and_leaves_no_partial_output(tiny_bert: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})
    proc = start_build(project)
    wait_for_export_in_flight(project, proc)
    proc.send_signal(signal.SIGTERM)
    killed = finish(proc)
    export_log = project / "build/tiny/logs/export.log"
    log_head = export_log.read_text(encoding="utf-8", errors="replace")[:3000] if export_log.exists() else ""
    report = f"rc {killed.rc}\n{killed.stdout}\n{killed.stderr[-3000:]}\nexport.log:\n{log_head}"
    assert killed.rc == -signal.SIGINT, report  # stopped, as Ctrl-C would; not aborted (SIGABRT)
    assert "stopped by SIGTERM: finished tasks are saved" in killed.stderr, report
    assert "Traceback" not in killed.stderr, report
    assert "fetch:tiny" in killed.executed
    assert not (project / "build/tiny/export").exists()  # nothing half-built looks finished
    # The work dir is normally removed on the way out; if a run dies before that, the next run
    # removes it (a dead pid's work dir), which is what must hold.
    leftovers = list((project / "build/tiny").glob(".export.tmp-*"))
    if leftovers:
        print(f"work dir left after SIGTERM ({report})")
    rerun = run_doit(project, "build:tiny", "target=cpu")
    assert rerun.rc == 0, rerun.stderr
    assert not list((project / "build/tiny").glob(".export.tmp-*"))
    assert "fetch:tiny" in rerun.up_to_date  # doit saved its state on SIGTERM
    # doit keeps file_dep as a set, so config may have run before or after the interrupted export.
    not_reached = {"config:tiny"} - killed.executed
    assert rerun.executed == {"export:tiny", "engine:tiny", "repo:tiny"} | not_reached


def test_sigkill_costs_only_the_stage_in_flight(tiny_bert: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})
    proc = start_build(project)
    wait_for_export_in_flight(project, proc)
    fetch_manifest = project / "build/tiny/fetch/manifest.json"
    stamp = fetch_manifest.stat().st_mtime_ns
    proc.kill()
    finish(proc)
    assert not (project / "build/tiny/export/manifest.json").exists()
    assert list((project / "build/tiny").glob(".export.tmp-*"))  # SIGKILL leaves the work dir, never the output
    rerun = run_doit(project, "build:tiny", "target=cpu")
    assert rerun.rc == 0, rerun.stderr
    assert "fetch:tiny: output already built with these inputs and params; reused" in rerun.stderr
    assert fetch_manifest.stat().st_mtime_ns == stamp
    assert not list((project / "build/tiny").glob(".export.tmp-*"))
    assert (project / "repos/tiny/tiny/config.pbtxt").is_file()


def test_second_concurrent_run_is_refused_with_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})
    proc = start_build(project)
    try:
        wait_for_export_in_flight(project, proc)
        second = run_doit(project, "build:tiny", "target=cpu")
        listing = run_doit(project, "list", "--status", "target=cpu")
    finally:
        first = finish(proc)
    assert second.rc == 3
    assert second.stdout == ""
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ERROR: build/.lock: another doit run is using this project (pid ")
    assert listing.rc == 0  # read-only commands do not need the lock
    assert first.rc == 0
