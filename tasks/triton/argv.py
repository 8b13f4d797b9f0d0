"""Where ``tritonserver`` and its python-backend stub are, and the command line and environment it runs with."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import UserError

log = logging.getLogger(__name__)

TARGETS = ("cpu", "trt")
STUB_NAME = "triton_python_backend_stub"
TRT_FALLBACK_BINARY = Path("/opt/tritonserver/bin/tritonserver")
PYTRITON_HINT = "pip install nvidia-pytriton==0.7.0"


@dataclass(frozen=True)
class Ports:
    """The three TCP ports a Triton server listens on."""

    http: int
    grpc: int
    metrics: int

    def named(self) -> dict[int, str]:
        """Map each port number to its service (``http``, ``grpc``, ``metrics``)."""
        return {self.metrics: "metrics", self.grpc: "grpc", self.http: "http"}


class ServerError(UserError):
    """Triton could not be found, started or stopped.

    The message is one line; for start failures the relevant log lines follow it
    after a newline, because the reason (a model that failed to load) is only there.
    """

    def __init__(self, message: str, *, log_path: Path | None = None, log_tail: str = "") -> None:
        """Build ``tritonserver: <message> (log: <path>)`` plus the optional tail."""
        text = f"{message} (log: {log_path})" if log_path is not None else message
        if log_tail:
            text = f"{text}\n{log_tail}"
        super().__init__("tritonserver", text)
        self.log_path = log_path
        self.log_tail = log_tail


# ----------------------------------------------------------------------- locating


def _pytriton_dir() -> Path:
    # find_spec on a top-level package locates it without running its __init__,
    # which would import numpy, tritonclient and friends.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        msg = f"target 'cpu' needs the nvidia-pytriton wheel: {PYTRITON_HINT}"
        raise ServerError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


def check_target(target: str) -> None:
    if target not in TARGETS:
        msg = f"unknown target {target!r}; expected one of {', '.join(TARGETS)}"
        raise ServerError(msg)


def find_tritonserver(target: str) -> Path:
    """Return the ``tritonserver`` binary to run for *target* (``cpu`` or ``trt``)."""
    check_target(target)
    if target == "cpu":
        binary = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
        if not os.access(binary, os.X_OK):
            msg = f"{binary} is missing or not executable; {PYTRITON_HINT}"
            raise ServerError(msg)
        return binary
    found = shutil.which("tritonserver")
    if found:
        return Path(found)
    if os.access(TRT_FALLBACK_BINARY, os.X_OK):
        return TRT_FALLBACK_BINARY
    msg = (
        f"no tritonserver on PATH or at {TRT_FALLBACK_BINARY}; run inside the Triton "
        "container (nvcr.io/nvidia/tritonserver:<version>-py3) or use target 'cpu'"
    )
    raise ServerError(msg)


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _stub_for_this_python(stubs: Path) -> Path:
    stub = stubs / _python_version() / STUB_NAME
    if stub.is_file():
        return stub
    have = sorted(p.parent.name for p in stubs.glob(f"*/{STUB_NAME}"))
    msg = f"nvidia-pytriton has no python-backend stub for Python {_python_version()} (has: {', '.join(have) or 'none'})"
    raise ServerError(msg)


def prepare_backend_dir(dest: Path) -> Path:
    """Build the private backends tree ``dest/python/`` for the cpu target.

    The wheel keeps one stub per Python version away from the backend library, while
    the backend looks for the stub next to ``libtriton_python.so``; symlinks bring
    the three files together without touching site-packages (Triton accepts them).
    Returns *dest*, the value for ``--backend-directory``.
    """
    tritonserver = _pytriton_dir() / "tritonserver"
    stub = _stub_for_this_python(tritonserver / "python_backend_stubs")
    backend = tritonserver / "backends" / "python"
    sources = [
        backend / "libtriton_python.so",
        backend / "triton_python_backend_utils.py",
        stub,
    ]
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        link = python_dir / source.name
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return dest


# ------------------------------------------------------------------- command line


def _prepend(first: list[str], previous: str | None) -> str:
    parts = [p for p in first if p]
    if previous:
        parts.append(previous)
    return os.pathsep.join(parts)


def _cpu_environment() -> dict[str, str]:
    env = dict(os.environ)
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        log.warning("this Python has no shared libpython: python-backend models may fail to import packages from the venv")
    libdir = str(sysconfig.get_config_var("LIBDIR") or "")
    pytriton_libs = str(_pytriton_dir().parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = _prepend([libdir, pytriton_libs], env.get("LD_LIBRARY_PATH"))
    # Not resolved: the venv's bin holds the python3 symlink next to pyvenv.cfg.
    env["PATH"] = _prepend([str(Path(sys.executable).parent)], env.get("PATH"))
    return env


def server_command(
    repo: Path,
    target: str,
    ports: Ports,
    backend_dir: Path | None,
    *,
    address: str = "127.0.0.1",
    exit_timeout_s: int = 5,
    model_control: str = "none",
    log_verbose: int = 0,
    shm_prefix: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Return the argv and the full environment to run ``tritonserver`` on *repo*.

    On ``cpu`` *backend_dir* must come from :func:`prepare_backend_dir`; on ``trt``
    the container's backends are used unless a directory is given.  *shm_prefix*
    names the python-backend shared-memory regions so a server's leftovers can be
    told apart from other servers' regions.
    """
    binary = find_tritonserver(target)
    if target == "cpu" and backend_dir is None:
        msg = "target 'cpu' needs a backend directory from prepare_backend_dir()"
        raise ServerError(msg)
    argv = [
        str(binary),
        f"--model-repository={repo}",
        f"--model-control-mode={model_control}",
        f"--http-address={address}",
        f"--http-port={ports.http}",
        f"--grpc-address={address}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={address}",
        f"--metrics-port={ports.metrics}",
        "--exit-on-error=true",
        f"--exit-timeout-secs={exit_timeout_s}",
        f"--log-verbose={log_verbose}",
    ]
    if model_control == "explicit":
        # Everything at start, as in mode none; later loads and unloads through the repository API.
        argv.append("--load-model=*")
    if backend_dir is not None:
        argv.append(f"--backend-directory={backend_dir}")
    if shm_prefix is not None:
        argv.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}")
    env = _cpu_environment() if target == "cpu" else dict(os.environ)
    return argv, env
