"""Heavy stage actions in a worker process, so their peak memory leaves with it.

An ONNX export loads torch, transformers and onnxruntime and peaks far above what they cost to
import; done inside doit's process that peak stays resident for the rest of the run (every later
stage, the benchmark's Triton server beside it).  ``run`` starts ``python -m <stage module>``,
whose ``__main__`` block calls ``serve`` with the stage's own function; the stage sees the same
context (params, inputs, work dir, log folder) and its record comes back.

What a user sees is unchanged: a ``UserError`` raised in the worker comes back as the same
one-line error, a full disk as the ``OSError`` the stage runner words; progress and log lines go
to the inherited stderr.  A stop (Ctrl-C, SIGTERM) is the parent's to act on: the worker ignores
SIGINT, the parent kills it and re-raises, and a worker whose parent dies is killed by the kernel.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core import diskfull, interrupts
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext, canonical

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding this ``tasks`` package


def job(ctx: StageContext, parent: int) -> dict[str, Any]:
    """What the worker needs to rebuild the stage's context (JSON)."""
    stage = ctx.stage
    return {
        "name": stage.name,
        "model": stage.model,
        "params": canonical(stage.params),
        "out_dir": str(stage.out_dir),
        "log_dir": str(stage.log_dir),
        "target": stage.target,
        "out": str(ctx.out),
        "inputs": {role: str(path) for role, path in ctx.inputs.items()},
        "log_level": logging.getLevelName(logging.getLogger("tasks").getEffectiveLevel()).lower(),
        "parent": parent,
    }


def context(spec: dict[str, Any], function: Callable[[StageContext], None]) -> StageContext:
    """The worker's copy of the parent's ``StageContext``."""
    stage = Stage(
        name=spec["name"],
        model=spec["model"],
        params=spec["params"],
        out_dir=Path(spec["out_dir"]),
        action=function,
        doc="",
        log_dir=Path(spec["log_dir"]),
        target=spec["target"],
    )
    return StageContext(stage, Path(spec["out"]), {role: Path(p) for role, p in spec["inputs"].items()})


def _environment() -> dict[str, str]:
    # The worker must import this same ``tasks`` package, whatever the current directory holds.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _start(entry: str, result_fd: int) -> subprocess.Popen[bytes]:
    # SIGINT is blocked across the start so the worker begins with it blocked (the mask survives
    # exec) and can ignore it before a Ctrl-C could raise inside its imports; the parent's own
    # SIGINT stays pending meanwhile, never lost.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return subprocess.Popen(
            [sys.executable, "-m", entry],
            stdin=subprocess.PIPE,
            pass_fds=(result_fd,),
            env=_environment(),
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run(ctx: StageContext, entry: str) -> None:
    """Run the stage in ``python -m entry``; its record is merged into ``ctx.record``."""
    read_fd, write_fd = os.pipe()
    payload = job(ctx, os.getpid()) | {"result_fd": write_fd}  # pass_fds keeps the number in the worker
    proc: subprocess.Popen[bytes] | None = None
    with os.fdopen(read_fd, "rb") as results:
        try:
            try:
                with interrupts.uninterrupted():
                    proc = _start(entry, write_fd)
            finally:
                os.close(write_fd)  # from here only the worker holds it: its exit ends our read
            assert proc.stdin is not None  # noqa: S101 - started with stdin=PIPE
            proc.stdin.write(json.dumps(payload).encode())
            proc.stdin.close()
            answer = results.read()
            code = proc.wait()
        except BaseException:
            if proc is not None:
                proc.kill()  # a stop (or a failure here) must not leave the worker writing into the work dir
                proc.wait()
            raise
    _outcome(ctx, answer, code)


def _outcome(ctx: StageContext, answer: bytes, code: int) -> None:
    """The worker's record, or its error raised here as it was raised there."""
    where = ctx.stage.task_name
    if code < 0:
        raise UserError(where, f"the worker process was killed by {signal.Signals(-code).name} (out of memory?); nothing was published")
    if not answer:
        raise RuntimeError(f"{where}: the worker process exited with status {code} without a result (its traceback is above)")
    result = json.loads(answer)
    if "user_error" in result:
        raise UserError(result["user_error"]["where"], result["user_error"]["message"])
    if "disk_full" in result:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), result["disk_full"])
    ctx.record.update(result["record"])


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when its parent dies (a SIGKILLed doit leaves no orphan writing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the parent's own kill on a stop still applies
    if os.getppid() != parent:  # it died before the request was in place
        os._exit(1)


def serve(function: Callable[[StageContext], None], configure_logging: Callable[[str], None]) -> None:
    """The worker's main: the job from stdin, ``function`` run on it, the outcome to the result pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides about a Ctrl-C and kills us
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    spec = json.loads(sys.stdin.buffer.read())
    _die_with_parent(spec["parent"])
    configure_logging(spec["log_level"])
    ctx = context(spec, function)
    result: dict[str, Any]
    try:
        function(ctx)
        result = {"record": ctx.record}
    except UserError as exc:
        result = {"user_error": {"where": exc.where, "message": exc.message}}
    except Exception as exc:
        full = diskfull.disk_full(exc)  # behind whatever the writing library wrapped it in
        if full is None:
            raise  # an internal bug: its traceback goes to stderr and the parent says so
        result = {"disk_full": full.filename and str(full.filename)}
    with os.fdopen(spec["result_fd"], "w", encoding="utf-8") as pipe:
        json.dump(result, pipe)
