"""Progress of long work: a live status line on a terminal, a periodic line in logs, the tool's last log line."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

from tasks.console import progress
from tasks.stages import engine
from tests.helpers import Terminal

TOOL = """\
import sys, time
for step in range(1, 4):
    print(f"[step {step}/3] building layers", flush=True)
    time.sleep(0.4)
sys.stdout.write("progress 10%\\rprogress 55%\\r")
sys.stdout.flush()
time.sleep(0.6)
"""


def test_last_line_takes_what_a_progress_bar_redrew_last(tmp_path: Path) -> None:
    log = tmp_path / "tool.log"
    log.write_text("starting\nphase 2\n\nbar 10%\rbar 60%\r\n")
    assert progress.last_line(log) == "bar 60%"
    assert progress.last_line(tmp_path / "missing.log") == ""


def test_terminal_status_line_is_rewritten_in_place_and_cleared(tmp_path: Path) -> None:
    log = tmp_path / "tool.log"
    log.write_text("")
    out = Terminal()
    with progress.watch("engine:m: trtexec", progress.log_tail(log), stream=out, every_s=0.05):
        for line in ("[I] parsing", "[I] building tactic 3/9"):
            with log.open("a") as handle:
                handle.write(line + "\n")
            time.sleep(0.3)
    text = out.getvalue()
    frames = [frame for frame in text.split("\r\x1b[K") if frame]
    assert "engine:m: trtexec: 0 s | [I] parsing" in frames
    assert "engine:m: trtexec: 0 s | [I] building tactic 3/9" in frames
    assert "\n" not in text  # one line, redrawn
    assert text.endswith("\r\x1b[K")  # and wiped when the work ends


def test_logs_get_a_still_running_line_with_the_tools_last_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "tool.py"
    script.write_text(TOOL)
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.25)
    with caplog.at_level(logging.INFO, logger="tasks.console.progress"):
        engine.run_tool([sys.executable, str(script)], tmp_path / "tool.log", "engine:m")
    lines = [r.getMessage() for r in caplog.records if r.name == "tasks.console.progress"]
    assert lines, "no progress line while the tool ran"
    assert all(line.startswith(f"still running: engine:m: {Path(sys.executable).name}: ") for line in lines)
    assert any("| [step 2/3] building layers" in line or "| [step 3/3] building layers" in line for line in lines)
    assert lines[-1].endswith("| progress 55%")
