"""Heavy stages run in a worker process: doit's process never loads torch or onnxruntime, and nothing a user sees changes.

The relay is pinned with a small worker module planted on PYTHONPATH (each case one behaviour);
the build test runs doit itself in a process that reports, at exit, which heavy packages it loaded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.core import stage as stage_module
from tasks.core import worker
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext
from tests.helpers import ROOT, TINY_YAML, copy_project, doit_env

PLANTED = """
import errno, os, signal, time
from pathlib import Path
from tasks.console import logs
from tasks.core import worker
from tasks.core.errors import UserError, YamlError


def build(ctx):
    how = ctx.params["how"]
    Path(ctx.params["pid_file"]).write_text(str(os.getpid()))
    if how == "record":
        (ctx.out / "model.onnx").write_bytes(b"onnx")
        ctx.record["seen"] = {"task": ctx.stage.task_name, "inputs": {k: str(v) for k, v in ctx.inputs.items()}}
    elif how == "yaml_error":
        raise YamlError("models/m.yaml", "export.opset", "expected an integer >= 7, got 'x'")
    elif how == "disk_full":
        cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.out / "model.onnx"))
        raise RuntimeError("the exporter wrapped it") from cause
    elif how == "bug":
        raise ValueError("an internal bug")
    elif how == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "sleep":
        time.sleep(120)


if __name__ == "__main__":
    worker.serve(build, logs.configure)
"""

# A stage run in a process of its own that SIGTERM or Ctrl-C stops, as doit's process would be.
STOPPED = """
import sys
from pathlib import Path
from tasks.core import interrupts, worker
from tasks.core.stage import Stage, StageContext
interrupts.save_state_on_sigterm()
tmp = Path(sys.argv[1])
stage = Stage("export", "m", {"how": "sleep", "pid_file": str(tmp / "pid")}, tmp / "export", lambda ctx: None, "test")
try:
    worker.run(StageContext(stage, tmp / "work", {}), "planted_worker")
except KeyboardInterrupt:
    print("stopped")
"""

# doit itself, reporting at exit which heavy packages its own process loaded.
REPORTING_DOIT = """
import atexit, json, runpy, sys
heavy = sys.argv.pop().split(",")
atexit.register(lambda: print("LOADED " + json.dumps(sorted(m for m in heavy if m in sys.modules))))
sys.argv = ["doit", *sys.argv[1:]]
runpy.run_module("doit", run_name="__main__", alter_sys=True)
"""
HEAVY = ("torch", "transformers", "onnx", "onnxruntime")


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "planted_worker.py").write_text(PLANTED, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    return tmp_path


def planted_stage(tmp_path: Path, how: str) -> Stage:
    params = {"how": how, "pid_file": str(tmp_path / "pid")}
    return Stage("export", "m", params, tmp_path / "export", lambda ctx: worker.run(ctx, "planted_worker"), "test")


def run_planted(tmp_path: Path, how: str) -> StageContext:
    ctx = StageContext(planted_stage(tmp_path, how), tmp_path / "work", {"hf": tmp_path / "fetch"})
    worker.run(ctx, "planted_worker")
    return ctx


def worker_pid(tmp_path: Path) -> int:
    return int((tmp_path / "pid").read_text(encoding="utf-8"))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").split(")")[-1].split()[0]
    return state == "Z"  # dead, waiting to be reaped by a parent that is gone


def test_the_worker_fills_the_work_dir_and_its_record_comes_back(planted: Path) -> None:
    ctx = run_planted(planted, "record")
    assert (planted / "work/model.onnx").read_bytes() == b"onnx"
    assert ctx.record == {"seen": {"task": "export:m", "inputs": {"hf": str(planted / "fetch")}}}
    assert worker_pid(planted) != os.getpid()


def test_a_user_error_in_the_worker_is_the_same_one_line(planted: Path) -> None:
    with pytest.raises(UserError) as caught:
        run_planted(planted, "yaml_error")
    assert str(caught.value) == "models/m.yaml: export.opset: expected an integer >= 7, got 'x'"


def test_a_full_disk_in_the_worker_is_worded_by_the_stage_runner(planted: Path) -> None:
    failed = stage_module.run_stage(planted_stage(planted, "disk_full"))
    assert failed is not None
    assert re.fullmatch(rf"export:m: disk full while writing {planted}/\.export\.tmp-\d+/model\.onnx \(\d+ MB free there\)", failed.message)
    assert "\n" not in failed.message


def test_an_internal_bug_in_the_worker_is_not_dressed_as_a_user_error(planted: Path) -> None:
    with pytest.raises(RuntimeError, match=r"^export:m: the worker process exited with status 1 without a result"):
        run_planted(planted, "bug")


def test_a_worker_killed_from_outside_is_one_line(planted: Path) -> None:
    with pytest.raises(UserError, match=r"^export:m: the worker process was killed by SIGKILL \(out of memory\?\); nothing was published$"):
        run_planted(planted, "killed")


def start_stopped(tmp_path: Path) -> subprocess.Popen[str]:
    env = doit_env({"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    program = [sys.executable, "-c", STOPPED, str(tmp_path)]
    proc = subprocess.Popen(
        program, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "pid").is_file() or not (tmp_path / "pid").read_text(encoding="utf-8"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.02)
    return proc


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 30
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


@pytest.mark.parametrize(("how", "name"), [(os.kill, "SIGTERM"), (os.killpg, "SIGINT")], ids=["sigterm-to-doit", "ctrl-c-to-the-group"])
def test_a_stop_kills_the_worker_and_stops_the_parent_without_a_traceback(planted: Path, how: object, name: str) -> None:
    proc = start_stopped(planted)
    pid = worker_pid(planted)
    how(proc.pid, signal.Signals[name])  # type: ignore[operator]
    out, err = proc.communicate(timeout=60)
    assert out == "stopped\n", err
    assert "Traceback" not in err
    assert gone(pid)


def test_a_worker_whose_parent_is_killed_dies_with_it(planted: Path) -> None:
    proc = start_stopped(planted)
    pid = worker_pid(planted)
    proc.kill()  # the parent alone, as the OOM killer would
    proc.communicate(timeout=60)
    assert wait_gone(pid), "the worker outlived its parent"


def test_a_build_never_loads_torch_or_onnxruntime_into_doits_process(tiny_bert: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})
    argv = [sys.executable, "-c", REPORTING_DOIT, "build:tiny", "target=cpu", ",".join(HEAVY)]
    done = subprocess.run(argv, cwd=project, env=doit_env(), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert {"export:tiny", "engine:tiny"} <= {line[3:].strip() for line in done.stdout.splitlines() if line.startswith(".  ")}
    loaded = json.loads(done.stdout.rsplit("LOADED ", 1)[1])
    assert loaded == []
    assert (project / "build/tiny/export/model.onnx").is_file()
    assert (project / "build/tiny/engine/cpu/model.onnx").is_file()
    assert "export: max |onnxruntime - pytorch| =" in done.stderr  # the worker's log lines still reach the console
    assert (project / "build/tiny/logs/export.log").stat().st_size > 0
