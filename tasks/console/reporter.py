"""doit console reporter: user errors on one line, progress you can follow, and a summary at the end.

doit's default reporter writes ``TaskFailed - taskid:<task>`` and the message on separate lines;
a mistake the user can fix reads better as one line, while an internal bug (an exception with a
traceback) keeps doit's full report.  On a terminal each task that runs is announced as
``[k/N m:ss] stage:model`` (N: the tasks with actions this command may run; m:ss the run's
elapsed time); elsewhere (CI logs)
doit's plain ``.  stage:model`` lines are kept.  Every run that considered a stage ends with a
summary: what ran and what failed, one line each with its seconds, and what was up to date, one
line per model (a run with nothing to do prints the summary's first line only; ``log=debug`` shows
doit's ``-- stage:model`` lines and every task).  Its time counts from the process's start, so it
includes loading the models.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from doit.exceptions import BaseFail
from doit.reporter import ConsoleReporter

from tasks.core import procstat

RAN, UP_TO_DATE, FAILED = "ran", "up to date", "failed"


def process_seconds() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or None where that is not known."""
    try:
        found = procstat.fields("self")
        if found is None:
            return None
        started = int(found[procstat.STARTTIME]) / os.sysconf("SC_CLK_TCK")  # clock ticks after boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _verbose() -> bool:
    return logging.getLogger("tasks").isEnabledFor(logging.DEBUG)


def _closure(tasks: Mapping[str, Any], selected: list[str]) -> list[str]:
    """The selected tasks and every task they depend on (task_dep, setup), in a stable order."""
    seen: dict[str, None] = {}
    pending = list(selected)
    while pending:
        name = pending.pop()
        if name in seen or name not in tasks:
            continue
        seen[name] = None
        task = tasks[name]
        pending += [*task.task_dep, *task.setup_tasks]
    return list(seen)


class Reporter(ConsoleReporter):  # type: ignore[misc]
    desc = "console output, user errors on one line, progress and a summary"

    def __init__(self, outstream: Any, options: dict[str, Any]) -> None:  # noqa: ANN401 - a text stream
        super().__init__(outstream, options)
        self.started = time.monotonic() - (process_seconds() or 0.0)
        self.begun: dict[str, float] = {}
        self.results: dict[str, tuple[str, float | None]] = {}
        self.total = 0
        self.tty = bool(getattr(outstream, "isatty", lambda: False)())

    def initialize(self, tasks: Mapping[str, Any], selected_tasks: list[str]) -> None:
        super().initialize(tasks, selected_tasks)
        self.total = sum(1 for name in _closure(tasks, selected_tasks) if tasks[name].actions)

    def execute_task(self, task: Any) -> None:  # noqa: ANN401 - doit Task
        self.begun[task.name] = time.monotonic()
        if self.tty and task.actions and not task.name.startswith("_"):
            done = len(self.results) + 1
            minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
            self.write(f"[{done}/{self.total} {minutes}:{seconds:02d}] {task.title()}\n")
            return
        super().execute_task(task)

    def _record(self, task: Any, result: str) -> None:  # noqa: ANN401
        if task.actions:
            # An up-to-date task never starts: it has no time of its own.
            start = self.begun.get(task.name)
            self.results[task.name] = (result, None if start is None else time.monotonic() - start)

    def add_success(self, task: Any) -> None:  # noqa: ANN401
        super().add_success(task)
        self._record(task, RAN)

    def skip_uptodate(self, task: Any) -> None:  # noqa: ANN401
        # Thousands of "-- stage:model" lines in a zoo's no-op say less than the summary's one per model.
        if _verbose():
            super().skip_uptodate(task)
        self._record(task, UP_TO_DATE)

    def add_failure(self, task: Any, fail: BaseFail) -> None:  # noqa: ANN401 - doit Task
        self._record(task, FAILED)
        if fail.traceback or not fail.report:
            super().add_failure(task, fail)
            return
        message = str(fail.message).strip()
        prefix = "" if message.startswith(f"{task.name}:") else f"{task.name}: "
        self.write(f"ERROR: {prefix}{message}\n")

    def complete_run(self) -> None:
        super().complete_run()
        self.write(summary(self.results, time.monotonic() - self.started, every_task=_verbose()))


def _model(task: str) -> str:
    return task.partition(":")[2] or task


def summary(results: Mapping[str, tuple[str, float | None]], seconds: float, *, every_task: bool = False) -> str:
    """The closing lines; empty when no task with actions was considered (``doit list``, ``doit info``).

    Tasks that ran or failed get a line each; up-to-date ones one line per model, or none
    when nothing ran (``every_task``: a line per task, as ``log=debug`` asks).
    """
    if not results:
        return ""
    counts = {kind: sum(1 for r, _ in results.values() if r == kind) for kind in (RAN, UP_TO_DATE, FAILED)}
    models = {_model(name) for name in results}
    lines = [
        f"summary: {counts[RAN]} ran, {counts[UP_TO_DATE]} up to date, {counts[FAILED]} failed in {seconds:.1f} s"
        + (f" ({len(models)} models)" if len(models) > 1 else "")
    ]
    shown = results if every_task else {n: r for n, r in results.items() if r[0] != UP_TO_DATE}
    current: dict[str, list[str]] = {}
    if not every_task and len(shown) < len(results) and shown:
        for name, (result, _) in results.items():
            if result == UP_TO_DATE:
                current.setdefault(_model(name), []).append(name.partition(":")[0])
    width = max((len(name) for name in [*shown, *current]), default=0)
    lines += [
        f"  {name:<{width}}  {result:<10}  " + ("      -" if took is None else f"{took:7.1f} s") for name, (result, took) in shown.items()
    ]
    lines += [f"  {model:<{width}}  {UP_TO_DATE:<10}  {', '.join(stages)}" for model, stages in current.items()]
    return "\n".join(lines) + "\n"
