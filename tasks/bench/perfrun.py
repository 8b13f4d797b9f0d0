"""A perf tool (perf_analyzer, genai-perf): where it is, one run's settings, the run as a process group with a timeout."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tasks.console import progress
from tasks.core import interrupts
from tasks.core.errors import UserError
from tasks.triton.processes import exit_status, group_pids

log = logging.getLogger(__name__)

PERF_ANALYZER = "perf_analyzer"
GENAI_PERF = "genai-perf"
TOOLS = (PERF_ANALYZER, GENAI_PERF)
BUILTIN = "builtin"
AUTO = "auto"
SDK_IMAGE = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk"
WHERE = "bench.tool"

PA_CSV_NAME = "perf_analyzer.csv"
GENAI_ARTIFACT_DIR = "genai-perf-artifacts"
GENAI_EXPORT_STEM = "profile_export"
GENAI_PROMPTS_NAME = "genai-perf-prompts.jsonl"

TAIL_LINES = 15
_POLL_S = 0.05
# How long a tool gets to exit after SIGTERM before the group is killed outright.
_TERM_GRACE_S = 3.0
_KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class ToolRun:
    """One concurrency level to measure with an external tool."""

    model: str
    grpc_url: str
    concurrency: int
    measurement_interval_ms: int
    stability_percentage: float
    max_trials: int
    streaming: bool
    work_dir: Path
    log_path: Path


def find_tool(name: str) -> Path:
    """The ``perf_analyzer`` or ``genai-perf`` executable on ``PATH``."""
    if name not in TOOLS:
        raise UserError(WHERE, f"unknown tool {name!r}; expected one of {', '.join(TOOLS)}")
    found = shutil.which(name)
    if found is None:
        raise UserError(WHERE, f"{name} is not on PATH; it ships in the Triton SDK image {SDK_IMAGE} (or set bench.tool: builtin)")
    return Path(found)


def resolve_tool(tool: str) -> str:
    """The tool ``bench.tool`` names; ``auto`` is perf_analyzer when it is on PATH, else the built-in generator.

    perf_analyzer is what NVIDIA's tooling measures with, and a C++ client takes less CPU per
    request from a machine it shares with the server; the built-in generator is the fallback.
    """
    if tool != AUTO:
        return tool
    return PERF_ANALYZER if shutil.which(PERF_ANALYZER) is not None else BUILTIN


def default_timeout_s(run: ToolRun) -> float:
    """Three times the longest measurement the settings allow, plus time to start and warm up."""
    return (run.max_trials + 2) * run.measurement_interval_ms / 1000.0 * 3 + 300.0


# ------------------------------------------------------------------------ processes


def _wait_exit(pid: int, timeout_s: float, *, interruptible: bool = False) -> int | None:
    deadline = time.monotonic() + timeout_s
    while (status := exit_status(pid)) is None:
        if time.monotonic() >= deadline:
            return None
        if interruptible:
            interrupts.raise_if_interrupted()
        time.sleep(_POLL_S)
    return status


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the tool and everything it started, then reap it."""
    if exit_status(proc.pid) is None:
        _signal_group(proc.pid, signal.SIGTERM)
        _wait_exit(proc.pid, _TERM_GRACE_S)
    # The leader is a zombie or still running here, so the group id is still the tool's.
    _signal_group(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_WAIT_S
    while (left := group_pids(proc.pid)) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    if left:
        log.warning("processes %s of %s survived SIGKILL", left, proc.args)
    proc.wait()


def _log_tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])


def _with_tail(message: str, tail: str) -> str:
    return f"{message}\n{tail}" if tail else message


def _launch(tool: str, argv: list[str], run: ToolRun, env: Mapping[str, str] | None) -> tuple[subprocess.Popen[bytes], int]:
    run.log_path.parent.mkdir(parents=True, exist_ok=True)
    with run.log_path.open("a", encoding="utf-8") as log_file:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log_file.write(f"# {stamp} {tool} in {run.work_dir}: {shlex.join(argv)}\n")
        log_file.flush()
        offset = run.log_path.stat().st_size
        try:
            proc = subprocess.Popen(
                argv,
                cwd=run.work_dir,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise UserError(WHERE, f"cannot run {argv[0]}: {exc}") from None
    return proc, offset


def run_tool(tool: str, argv: list[str], run: ToolRun, *, env: Mapping[str, str] | None = None, timeout_s: float) -> None:
    """Run *argv* in ``run.work_dir`` and its own process group; raise UserError unless it exits 0.

    The group is killed before this returns or raises, whatever the reason.
    """
    log.debug("running %s", argv)
    proc, offset = _launch(tool, argv, run, env)
    try:
        with progress.watch(f"bench: {tool} at concurrency {run.concurrency}", progress.log_tail(run.log_path)):
            status = _wait_exit(proc.pid, timeout_s, interruptible=True)
    finally:
        _end_group(proc)
    where = f"at concurrency {run.concurrency} (log: {run.log_path})"
    if status is None:
        message = f"{tool} did not finish within {timeout_s:g} s {where}; it was stopped"
        raise UserError(WHERE, _with_tail(message, _log_tail(run.log_path, offset)))
    if status != 0:
        ended = f"was killed by signal {-status}" if status < 0 else f"failed with exit code {status}"
        raise UserError(WHERE, _with_tail(f"{tool} {ended} {where}", _log_tail(run.log_path, offset)))
