"""The console reporter: [k/N] progress on a terminal, doit's plain lines elsewhere, and a closing summary."""

from __future__ import annotations

from doit.task import Task

from tasks.console.reporter import Reporter, summary
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
    assert "[2/2 0:00] engine:m" in lines  # k of N, and the run's elapsed minutes:seconds
    assert lines[-3].startswith("summary: 1 ran, 1 up to date, 0 failed in ")
    assert lines[-2].split() == ["fetch:m", "up", "to", "date", "-"]
    assert lines[-1].split()[:2] == ["engine:m", "ran"]


def test_summary_table_lines() -> None:
    text = summary({"export:tiny": ("ran", 5.25), "repo:tiny": ("failed", 0.04), "fetch:tiny": ("up to date", None)}, 6.0)
    assert text.splitlines() == [
        "summary: 1 ran, 1 up to date, 1 failed in 6.0 s",
        "  export:tiny  ran             5.2 s",
        "  repo:tiny    failed          0.0 s",
        "  fetch:tiny   up to date        -",
    ]
    assert summary({}, 1.0) == ""  # doit list / info print no table
