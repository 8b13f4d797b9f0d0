"""The console reporter in a real doit run: the closing summary, and doit's plain lines in the logs."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import TINY_YAML, copy_project, run_doit


def test_a_real_run_ends_with_the_summary_and_keeps_plain_lines_in_logs(tiny_bert: Path, tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})
    first = run_doit(root, "build:tiny", "target=cpu")
    assert first.rc == 0, first.stdout + first.stderr
    assert ".  export:tiny" in first.stdout.splitlines()  # not a terminal: doit's plain lines
    assert "summary: 5 ran, 0 up to date, 0 failed in " in first.stdout
    again = run_doit(root, "build:tiny", "target=cpu")
    assert "summary: 0 ran, 5 up to date, 0 failed in " in again.stdout
    # A no-op is quiet: no "-- task" line, no row per task.
    assert [line for line in again.stdout.splitlines() if line.startswith(("-- ", "  "))] == []
    debug = run_doit(root, "build:tiny", "target=cpu", "log=debug")
    assert "-- export:tiny" in debug.stdout.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in debug.stdout.splitlines() if line.startswith("  ") and ":tiny" in line}
    assert rows == dict.fromkeys(("fetch:tiny", "export:tiny", "engine:tiny", "config:tiny", "repo:tiny"), "up")
