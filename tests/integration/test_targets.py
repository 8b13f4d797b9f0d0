"""Targets keep their own outputs: switching cpu <-> trt and back runs no stage action again.

A fake trtexec on PATH (a test double) stands in for TensorRT; without it target trt fails at the engine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FAKES, TINY_YAML, DoitRun, copy_project, doit_env, edit, run_doit

CPU_ALL = {"fetch:tiny", "export:tiny", "engine:tiny", "config:tiny", "repo:tiny"}
_ACTION_RAN = re.compile(r"^(\S+): (?:built|restored from the cache) in ")


def actions_run(result: DoitRun) -> set[str]:
    """Stages whose action ran (a stage doit ran that found its output already built says "reused")."""
    return {m.group(1) for line in result.stderr.splitlines() if (m := _ACTION_RAN.match(line))}


def build(root: Path, target: str, env: dict[str, str] | None = None) -> DoitRun:
    result = run_doit(root, "build:tiny", f"target={target}", env=env)
    assert result.rc == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def project(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project built on cpu; the tests walk through target switches in order, each leaving it built."""
    root = copy_project(tmp_path_factory.mktemp("targets"), {"tiny": TINY_YAML.format(path=tiny_bert)})
    assert actions_run(build(root, "cpu")) == CPU_ALL
    return root


def served_engine(root: Path) -> set[str]:
    return {p.name for p in (root / "repos/tiny/tiny_encoder/1").iterdir()}


def test_a_failed_trt_build_leaves_the_cpu_build_as_it_was(project: Path) -> None:
    failed = run_doit(project, "build:tiny", "target=trt")
    assert failed.rc != 0
    assert "trtexec not found on PATH" in failed.stdout + failed.stderr
    assert served_engine(project) == {"model.onnx", "model.py"}
    again = build(project, "cpu")
    assert actions_run(again) == set()
    # doit forgets what it saved for a task that fails (engine:tiny) and the config the failed run built for trt
    # changed config:tiny's file_dep list: doit runs both, and each finds its cpu output intact and reuses it.
    assert again.executed == {"config:tiny", "engine:tiny"}
    assert "config:tiny: output already built with these inputs and params; reused" in again.stderr
    assert "engine:tiny: output already built with these inputs and params; reused" in again.stderr
    assert build(project, "cpu").executed == set()


def test_switching_target_and_back_runs_no_stage_action(project: Path) -> None:
    env = doit_env(path_prefix=FAKES)
    trt = build(project, "trt", env)
    assert actions_run(trt) == {"engine:tiny", "repo:tiny"}  # the failed trt run above already built its config
    assert served_engine(project) == {"model.plan"}
    for target, served in (("cpu", {"model.onnx", "model.py"}), ("trt", {"model.plan"})):
        back = build(project, target, env)
        assert actions_run(back) == set(), back.stderr
        assert back.executed == {"config:tiny", "repo:tiny"}
        assert {"fetch:tiny", "export:tiny", "engine:tiny"} <= back.up_to_date
        assert served_engine(project) == served
        assert f"repos/tiny now serves the target {target} build" in back.stderr
    assert build(project, "trt", env).executed == set()
    for target in ("cpu", "trt"):
        manifest = (project / f"build/tiny/engine/{target}/manifest.json").read_text()
        assert f'"target": "{target}"' in manifest


def test_info_names_the_target(project: Path) -> None:
    edit(project / "models/tiny.yaml", "max_seq_len: 32", "max_seq_len: 24")
    info = run_doit(project, "info", "engine:tiny", "target=trt", env=doit_env(path_prefix=FAKES))
    assert "[target trt]" in info.stdout
    assert "params changed (target trt): engine.max_seq_len: 32 -> 24" in info.stdout
    assert "build/tiny/engine/trt/manifest.json" in info.stdout
    edit(project / "models/tiny.yaml", "max_seq_len: 24", "max_seq_len: 32")


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_work_trees_of_dead_runs_are_removed_at_start_and_live_ones_kept(project: Path) -> None:
    gone = dead_pid()
    stale = [
        project / f"repos/.tiny.tmp-{gone}",
        project / f"build/tiny/.engine.tmp-{gone}",
        project / f"build/tiny/engine/.cpu.tmp-{gone}",
    ]
    live = project / f"repos/.tiny.tmp-{os.getpid()}"
    for tree in [*stale, live]:
        (tree / "1").mkdir(parents=True)
        (tree / "1/model.onnx").write_bytes(b"x" * 1024)
    assert actions_run(build(project, "cpu")) == set()
    assert [p for p in stale if p.exists()] == []
    assert (live / "1/model.onnx").is_file()


def test_a_failing_tool_names_the_model_file_and_what_changed(project: Path) -> None:
    env = doit_env(path_prefix=FAKES)
    build(project, "trt", env)
    edit(project / "models/tiny.yaml", "max_batch_size: 8\n  max_seq_len", "max_batch_size: 16\n  max_seq_len")
    failed = run_doit(project, "build:tiny", "target=trt", env=doit_env({"FAKE_TRTEXEC_FAIL": "1"}, path_prefix=FAKES))
    assert failed.rc != 0
    output = failed.stdout + failed.stderr
    lines = [line for line in output.splitlines() if "trtexec" in line and "changed since the last good build" in line]
    assert len(lines) == 1, output
    assert "models/tiny.yaml changed since the last good build: engine.max_batch_size: 8 -> 16" in lines[0]
    assert lines[0].startswith("ERROR: engine:tiny: trtexec exited with status 1")  # named on the error's first line
    assert "Traceback" not in output
