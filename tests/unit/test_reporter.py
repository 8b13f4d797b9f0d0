"""The console reporter: [k/N] progress on a terminal, doit's plain lines elsewhere, and a closing summary."""

from __future__ import annotations

import re
import time

from doit.task import Task

from tasks.console.reporter import Reporter, process_seconds, summary
from tests.helpers import Terminal


def _noop() -> None:
    return None


def test_terminal_shows_k_of_n_over_the_selected_tasks_and_their_dependencies() -> None:
    tasks = {
        "fetch:m": Task("fetch:m", [_noop]),
        "engine:m": Task("engine:m", [_noop], task_dep=["fetch:m"]),
        "build:m": Task("build:m", None, task_dep=["engine:m"]),
        "fetch:other": Task("fetch:other", [_noop]),
    }
    out = Terminal()
    reporter = Reporter(out, {})
    reporter.initialize(tasks, ["build:m"])
    assert reporter.total == 2  # the group has no actions; fetch:other is not selected
    reporter.skip_uptodate(tasks["fetch:m"])
    reporter.execute_task(tasks["engine:m"])
    reporter.add_success(tasks["engine:m"])
    reporter.complete_run()
    lines = out.getvalue().splitlines()
    # k of N, and minutes:seconds since the process started (this test's process: pytest's)
    assert any(re.fullmatch(r"\[2/2 \d+:\d\d\] engine:m", line) for line in lines), lines
    assert lines[-3].startswith("summary: 1 ran, 1 up to date, 0 failed in ")
    assert lines[-2].split()[:2] == ["engine:m", "ran"]
    assert lines[-1].split() == ["m", "up", "to", "date", "fetch"]  # up-to-date stages: one line per model
    assert "-- fetch:m" not in lines


def test_summary_table_lines() -> None:
    results = {
        "export:tiny": ("ran", 5.25),
        "repo:tiny": ("failed", 0.04),
        "fetch:tiny": ("up to date", None),
        "config:tiny": ("up to date", None),
    }
    assert summary(results, 6.0).splitlines() == [
        "summary: 1 ran, 2 up to date, 1 failed in 6.0 s",
        "  export:tiny  ran             5.2 s",
        "  repo:tiny    failed          0.0 s",
        "  tiny         up to date  fetch, config",
    ]
    assert summary(results, 6.0, every_task=True).splitlines() == [
        "summary: 1 ran, 2 up to date, 1 failed in 6.0 s",
        "  export:tiny  ran             5.2 s",
        "  repo:tiny    failed          0.0 s",
        "  fetch:tiny   up to date        -",
        "  config:tiny  up to date        -",
    ]
    assert summary({}, 1.0) == ""  # doit list / info print no table


def test_a_no_op_is_one_line_whatever_the_number_of_models() -> None:
    results = {f"{stage}:m{i}": ("up to date", None) for i in range(200) for stage in ("fetch", "export", "engine")}
    assert summary(results, 0.4).splitlines() == ["summary: 0 ran, 600 up to date, 0 failed in 0.4 s (200 models)"]


def test_the_time_counts_from_the_process_start() -> None:
    seconds = process_seconds()
    assert seconds is not None
    assert 0.0 < seconds < time.clock_gettime(time.CLOCK_BOOTTIME)  # this test runs well after pytest started
    assert Reporter(Terminal(), {}).started <= time.monotonic() - seconds + 0.05
