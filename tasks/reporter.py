"""doit console reporter that prints a user error as one line.

doit's default reporter writes ``TaskFailed - taskid:<task>`` and the message on
separate lines; a mistake the user can fix reads better as one line, while an
internal bug (an exception with a traceback) keeps doit's full report.
"""

from __future__ import annotations

from typing import Any

from doit.exceptions import BaseFail
from doit.reporter import ConsoleReporter


class Reporter(ConsoleReporter):  # type: ignore[misc]
    desc = "console output, user errors on one line"

    def add_failure(self, task: Any, fail: BaseFail) -> None:  # noqa: ANN401 - doit Task
        if fail.traceback or not fail.report:
            super().add_failure(task, fail)
            return
        message = str(fail.message).strip()
        prefix = "" if message.startswith(f"{task.name}:") else f"{task.name}: "
        self.write(f"ERROR: {prefix}{message}\n")
