"""Start, health-check and stop a real ``tritonserver`` process.

Two targets are supported:

``cpu``
    The ``tritonserver`` binary shipped inside the ``nvidia-pytriton`` wheel, run on a
    machine without a GPU.  The python-backend stub links the system ``libpython``
    and runs an isolated interpreter, so the venv is only visible to model code when
    the venv ``bin`` directory comes first on ``PATH`` (the stub finds ``python3``
    there and reads ``pyvenv.cfg``) and this interpreter's ``LIBDIR`` comes first on
    ``LD_LIBRARY_PATH`` (otherwise a distro libpython runs this interpreter's stdlib
    and C extensions fail with undefined symbols).
``trt``
    The ``tritonserver`` of the Triton container, run as is.

The server runs in its own session: Ctrl-C in the terminal reaches only the caller,
and the python-backend stubs, which can ignore SIGTERM, are killed with the group.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

from tasks.core import fsops, interrupts
from tasks.core.errors import UserError
from tasks.tools import toolchain

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger(__name__)

TARGETS = ("cpu", "trt")
STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")  # noqa: S108 - where POSIX shm regions live on Linux
SHM_PREFIX = "triton_python_backend_shm_region_"
TRT_FALLBACK_BINARY = Path("/opt/tritonserver/bin/tritonserver")
PYTRITON_HINT = "pip install nvidia-pytriton==0.7.0"

_TAIL_LINES = 20
_POLL_S = 0.2
_PR_SET_PDEATHSIG = 1
_HEALTH_TIMEOUT_S = 1.0
# On top of --exit-timeout-secs: Triton still has to unload models and join stubs.
_STOP_MARGIN_S = 10.0
_KILL_WAIT_S = 5.0
_PORT_RETRIES = 3
_MAPS_FIELDS = 6
_IPV6 = 6
# glog error/fatal prefixes ("E1126 16:01:30.5 ...") or an error word anywhere.
_ERROR_LINE = re.compile(r"^[EF]\d{4} |error|fail|exception|in use", re.IGNORECASE)
# Every GPU-less start prints these; they never explain a failure on the cpu target.
_CPU_NOISE = ("CudaDriverHelper", "NVML", "DCGM", "pinned memory", "CUDA memory pool")
_IN_USE = re.compile(r":(\d+)'? already in use")


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


def _check_target(target: str) -> None:
    if target not in TARGETS:
        msg = f"unknown target {target!r}; expected one of {', '.join(TARGETS)}"
        raise ServerError(msg)


def find_tritonserver(target: str) -> Path:
    """Return the ``tritonserver`` binary to run for *target* (``cpu`` or ``trt``)."""
    _check_target(target)
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
    if backend_dir is not None:
        argv.append(f"--backend-directory={backend_dir}")
    if shm_prefix is not None:
        argv.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}")
    env = _cpu_environment() if target == "cpu" else dict(os.environ)
    return argv, env


@dataclass(frozen=True)
class Ranks:
    """How many server processes one multi-GPU engine needs, and which GPUs they may use."""

    world_size: int = 1
    gpus: tuple[int, ...] = ()

    @classmethod
    def from_params(cls, ranks: dict[str, Any]) -> Ranks:
        """From ``tasks.spec.sources.server_ranks`` (as serve and bench params carry it)."""
        return cls(int(ranks["world_size"]), tuple(ranks["gpus"]))


def leader_mode_command(rank_argv: list[str], ranks: Ranks, shm_prefix: str | None) -> list[str]:
    """``mpirun`` with one ``tritonserver`` per rank, as TensorRT-LLM's ``launch_triton_server.py`` starts them.

    Rank 0 loads the whole repository and serves the endpoints (the leader); every other rank
    loads only ``tensorrt_llm``, whose backend keeps it in the engine's worker loop, so those
    ranks never bind a port.  Each rank gets its own python-backend shared-memory prefix.
    """
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise ServerError(f"world size {ranks.world_size} needs mpirun (one tritonserver per GPU); it is not on PATH")
    argv = [mpirun, "--allow-run-as-root"]
    if ranks.gpus:
        argv += ["-x", f"CUDA_VISIBLE_DEVICES={','.join(map(str, ranks.gpus))}"]
    for rank in range(ranks.world_size):
        own = [a for a in rank_argv if not a.startswith(("--backend-config=python,shm-region-prefix-name=", "--model-control-mode="))]
        if rank > 0:
            own += ["--model-control-mode=explicit", "--load-model=tensorrt_llm"]
        else:
            own.append(next(a for a in rank_argv if a.startswith("--model-control-mode=")))
        if shm_prefix is not None:
            own.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}{rank}_")
        argv += ["-n", "1", *own, "--disable-auto-complete-config", ":"]
    return argv[:-1]


def check_gpus(ranks: Ranks, available: int | None) -> None:
    """An engine of world size N needs N GPUs: fail in one line before starting anything."""
    if ranks.gpus and len(ranks.gpus) != ranks.world_size:
        msg = f"the engines have world size {ranks.world_size} but triton.gpus names {len(ranks.gpus)} GPU(s): {list(ranks.gpus)}"
        raise ServerError(msg)
    if available is not None and (ranks.world_size > available or any(g >= available for g in ranks.gpus)):
        wanted = f"GPUs {list(ranks.gpus)}" if ranks.gpus else f"{ranks.world_size} GPUs"
        raise ServerError(f"the engines have world size {ranks.world_size} and need {wanted}, but nvidia-smi lists {available} GPU(s)")


# The fingerprint keys an engine cannot run without, as the repository's toolchain.json records them.
_ENGINE_KEYS = {"tensorrt_llm": "TensorRT-LLM", "tensorrt": "TensorRT", "gpu": "GPU", "compute_capability": "compute capability"}
_UNKNOWN = ("", "none", "unknown", "not installed")


def _release(value: str) -> str:
    # trtexec reports 10.14.1, the package 10.14.1.48, a local build 1.2.1+cu13: compare what both sides know.
    return ".".join(value.split("+", maxsplit=1)[0].split(".")[:3])


def known_first(*fingerprints: dict[str, str]) -> dict[str, str]:
    """The fingerprints merged, a known value never replaced by an unknown one.

    The plan image has trtexec but no TensorRT python package: its "not installed" must not
    hide the version trtexec reports (and with it the check of every plan engine).
    """
    merged: dict[str, str] = {}
    for fingerprint in fingerprints:
        for key, value in fingerprint.items():
            if key not in merged or str(merged[key]).lower() in _UNKNOWN:
                merged[key] = value
    return merged


def running_toolchain() -> dict[str, str]:
    """TensorRT, TensorRT-LLM and GPU of this machine, as the engine stages fingerprint them."""
    from tasks.tools import trtexec, trtllm  # noqa: PLC0415 - only a trt server start needs them

    return known_first(trtexec.trt_fingerprint(), trtllm.trt_fingerprint())


def toolchain_mismatch(built: dict[str, str], running: dict[str, str]) -> list[str]:
    """``key: built -> running`` for every engine key both sides know and that differs."""
    changes = []
    for key, label in _ENGINE_KEYS.items():
        was, now = str(built.get(key, "")), str(running.get(key, ""))
        if was.lower() in _UNKNOWN or now.lower() in _UNKNOWN:
            continue
        same = _release(was) == _release(now) if key.startswith("tensorrt") else was == now
        if not same:
            changes.append(f"{label} {was} (built) vs {now} (here)")
    return changes


def check_repository_toolchain(repo: Path, running: Callable[[], dict[str, str]] | None = None) -> None:
    """Refuse engines built by another TensorRT / TensorRT-LLM or on another GPU: the server would fail to load them."""
    data = fsops.read_json(repo / toolchain.REPOSITORY_FILE)
    if not isinstance(data, dict):
        return
    here = (running or running_toolchain)()
    for model, built in sorted(data.get("engines", {}).items()):
        changes = toolchain_mismatch(built, here)
        if changes:
            msg = f"{repo}: the engines of {model} were built for another toolchain: {'; '.join(changes)}"
            msg += f"; rebuild them here (doit build:{model} target=trt)"
            raise ServerError(msg)


# -------------------------------------------------------------------------- ports


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def pick_free_ports(address: str = "127.0.0.1") -> Ports:
    """Return three distinct ports that were free on *address* a moment ago.

    The sockets are closed before Triton binds, so another process can still take
    a port in between; :meth:`TritonServer.start` retries for that case.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(_family(address), socket.SOCK_STREAM)) for _ in range(3)]
        for sock in socks:
            sock.bind((address, 0))
        http, grpc, metrics = (int(sock.getsockname()[1]) for sock in socks)
    return Ports(http=http, grpc=grpc, metrics=metrics)


def _busy_port(address: str, ports: Ports) -> int | None:
    for port in (ports.http, ports.grpc, ports.metrics):
        with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR lets TIME_WAIT leftovers pass, as they do for Triton.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError:
                return port
    return None


def _connect_host(address: str) -> str:
    # A wildcard listen address is reached through loopback.
    if not address:
        return "127.0.0.1"
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(address)
        if ip.is_unspecified:
            return "::1" if ip.version == _IPV6 else "127.0.0.1"
    return address


def _host_port(address: str, port: int) -> str:
    host = _connect_host(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ready(url: str) -> bool:
    # No proxies: an http_proxy in the environment must not intercept loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=_HEALTH_TIMEOUT_S) as response:
            return int(response.status) == HTTPStatus.OK
    except (urllib.error.URLError, OSError):
        return False


# ---------------------------------------------------------------------- processes


@dataclass(frozen=True)
class _ProcStat:
    state: str
    pgrp: int
    session: int


def _proc_stat(pid: int) -> _ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the fixed fields follow the last ')'.
    fields = raw.rpartition(")")[2].split()
    return _ProcStat(state=fields[0], pgrp=int(fields[2]), session=int(fields[3]))


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat.state != "Z"


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _is_stub(pid: int) -> bool:
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/exe").readlink().name == STUB_NAME:
            return True
    # exe is unreadable for other users' processes; cmdline is not.
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return Path(os.fsdecode(argv0)).name == STUB_NAME


def live_stub_pids() -> list[int]:
    """Return the pids of all running (non-zombie) python-backend stubs."""
    return sorted(pid for pid in _pids() if _alive(pid) and _is_stub(pid))


def group_pids(group: int) -> list[int]:
    """Live (non-zombie) processes whose process group is *group*."""
    return [pid for pid in _pids() if (stat := _proc_stat(pid)) is not None and stat.pgrp == group and stat.state != "Z"]


def _group_stub_pids(group: int) -> list[int]:
    return [pid for pid in live_stub_pids() if (stat := _proc_stat(pid)) is not None and group in (stat.pgrp, stat.session)]


def _mapped_paths() -> set[str]:
    mapped: set[str] = set()
    for pid in _pids():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                # address perms offset dev inode [path]
                parts = line.split(maxsplit=_MAPS_FIELDS - 1)
                if len(parts) == _MAPS_FIELDS:
                    mapped.add(parts[-1].removesuffix(" (deleted)"))
    return mapped


def exit_status(pid: int) -> int | None:
    """Return the exit code of child *pid* (-signal if killed), None while it runs.

    WNOWAIT leaves the zombie in place: while it exists, its pid and so its process
    group id cannot be reused, which keeps a later killpg on that group safe.
    """
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return 0
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _wait_exited(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while exit_status(pid) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_and_wait(pids: list[int], timeout_s: float) -> list[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    alive = [pid for pid in pids if _alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _alive(pid)]
    return alive


# ---------------------------------------------------------------------------- log


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _summarize(text: str, noise: tuple[str, ...]) -> str:
    """Pick the log lines that explain a failure: errors if any, else the tail.

    Triton prints its status tables and shutdown chatter after the real error, so
    the last lines alone rarely say why a model failed to load.
    """
    lines = [
        line for line in text.splitlines() if line.strip() and not line.startswith(("|", "+", "#")) and not any(n in line for n in noise)
    ]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    return "\n".join((errors or lines)[-_TAIL_LINES:])


# ------------------------------------------------------------------------- server


class _PortClashError(Exception):
    def __init__(self, port: int, tail: str) -> None:
        super().__init__(port)
        self.port = port
        self.tail = tail


def _stop_with_parent() -> None:
    """In the child before exec: get SIGINT (graceful stop) when the launching process dies.

    The server runs in its own session so Ctrl-C reaches only the launcher; without
    this, a launcher killed with SIGKILL would leave the server running for good.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


class TritonServer:
    """A ``tritonserver`` child process; as a context manager it starts and stops."""

    def __init__(
        self,
        repo: Path,
        target: str,
        log_path: Path,
        *,
        ports: Ports | None = None,
        address: str = "127.0.0.1",
        startup_timeout_s: float = 180.0,
        exit_timeout_s: int = 5,
        model_control: str = "none",
        ranks: Ranks | None = None,
    ) -> None:
        """Describe a server; nothing runs until :meth:`start`.

        With *ports* None, free ports are picked at start (and re-picked on a clash).  *ranks*
        with a world size above 1 starts one process per rank under mpirun on ``trt``; on
        ``cpu`` the stand-in models run every rank's work in one process.
        """
        _check_target(target)
        self.repo = repo
        self.target = target
        self.log_path = log_path
        self.address = address
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.model_control = model_control
        self._explicit_ports = ports
        self._ports = ports
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[str] | None = None
        self._log_offset = 0
        self._exit_code: int | None = None
        self._backend_tmp: Path | None = None
        self._shm_prefix = f"{SHM_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_"
        self.ranks = ranks or Ranks()

    # -- properties

    @property
    def ports(self) -> Ports:
        """The ports in use (auto-picked ones are known once :meth:`start` ran)."""
        if self._ports is None:
            msg = "ports are picked when the server starts"
            raise ServerError(msg)
        return self._ports

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, the form ``tritonclient`` expects."""
        return _host_port(self.address, self.ports.http)

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return _host_port(self.address, self.ports.grpc)

    @property
    def pid(self) -> int | None:
        """Pid of the running server, which is also its process group and session."""
        return self._proc.pid if self._proc is not None else None

    @property
    def shm_prefix(self) -> str:
        """Name prefix of this server's python-backend regions in ``/dev/shm``."""
        return self._shm_prefix

    def stub_pids(self) -> list[int]:
        """Return the pids of the live python-backend stubs of this server."""
        return _group_stub_pids(self._proc.pid) if self._proc is not None else []

    # -- start

    def start(self) -> None:
        """Launch the server and wait until it is ready, else raise ServerError.

        Does nothing if the server is already running.  On failure everything that
        was started is stopped again before the error propagates.
        """
        if self._proc is not None:
            return
        if self.target == "trt":
            check_repository_toolchain(self.repo)
            if self.ranks.world_size > 1:
                check_gpus(self.ranks, toolchain.gpu_count())  # once, not again on every port retry
        try:
            self._start_with_retries()
        except BaseException:
            self.stop()
            raise

    def _start_with_retries(self) -> None:
        backend_dir = self._backend_dir()
        attempts = 1 if self._explicit_ports is not None else 1 + _PORT_RETRIES
        for attempt in range(1, attempts + 1):
            proc = self._launch(self._choose_ports(), backend_dir)
            try:
                self._wait_ready(proc)
            except _PortClashError as clash:
                self._halt()
                if attempt == attempts:
                    raise self._clash_error(clash.port, clash.tail) from None
                log.warning("tritonserver port %s was taken; new ports", clash.port)
            else:
                log.info("tritonserver ready: http %s", self.http_url)
                return

    def _backend_dir(self) -> Path | None:
        if self.target != "cpu":
            return None
        if self._backend_tmp is None:
            self._backend_tmp = Path(tempfile.mkdtemp(prefix="triton-backends-"))
        return prepare_backend_dir(self._backend_tmp)

    def _choose_ports(self) -> Ports:
        if self._explicit_ports is None:
            return pick_free_ports(self.address)
        # Checked up front: Triton reports a clash only after loading every model.
        busy = _busy_port(self.address, self._explicit_ports)
        if busy is not None:
            raise self._clash_error(busy, None)
        return self._explicit_ports

    def _clash_error(self, port: int, tail: str | None) -> ServerError:
        ports = self._ports or self._explicit_ports
        name = ports.named().get(port, "") if ports is not None else ""
        msg = f"{name} port {port} on {self.address} is already in use".lstrip()
        if tail is None:
            return ServerError(msg)
        return ServerError(msg, log_path=self.log_path, log_tail=tail)

    def _launch(self, ports: Ports, backend_dir: Path | None) -> subprocess.Popen[bytes]:
        argv, env = server_command(
            self.repo,
            self.target,
            ports,
            backend_dir,
            address=self.address,
            exit_timeout_s=self.exit_timeout_s,
            model_control=self.model_control,
            shm_prefix=self._shm_prefix,
        )
        if self.target == "trt" and self.ranks.world_size > 1:
            argv = leader_mode_command(argv, self.ranks, self._shm_prefix)
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("a", buffering=1)
        self._log_offset = self.log_path.stat().st_size
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.write(f"# {stamp} launcher: {' '.join(argv)}\n")
        self._ports = ports
        self._exit_code = None
        log.debug("starting %s", argv)
        # A Ctrl-C inside Popen, after the fork but before self._proc is set, would leave a
        # server that stop() does not know about: hold it until the process is recorded.
        with interrupts.uninterrupted():
            self._proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_stop_with_parent,  # noqa: PLW1509 - doit runs actions single-threaded
            )
        return self._proc

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        # Triton binds gRPC, HTTP, then metrics, and answers health before metrics is
        # bound: a metrics clash would only show after "ready" without this check.
        urls = [
            f"http://{self.http_url}/v2/health/ready",
            f"http://{_host_port(self.address, self.ports.metrics)}/metrics",
        ]
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if exit_status(proc.pid) is not None:
                self._raise_exited(proc)
            if all(_ready(url) for url in urls) and exit_status(proc.pid) is None:
                return
            if time.monotonic() >= deadline:
                msg = f"not ready after {self.startup_timeout_s:g} s"
                tail = self._log_tail()
                raise ServerError(msg, log_path=self.log_path, log_tail=tail)
            interrupts.raise_if_interrupted()
            time.sleep(_POLL_S)

    def _raise_exited(self, proc: subprocess.Popen[bytes]) -> None:
        clash = _IN_USE.search(_read_from(self.log_path, self._log_offset))
        if clash is not None:
            raise _PortClashError(int(clash.group(1)), self._log_tail())
        msg = f"exited with code {exit_status(proc.pid)} before becoming ready"
        raise ServerError(msg, log_path=self.log_path, log_tail=self._log_tail())

    def _log_tail(self) -> str:
        noise = _CPU_NOISE if self.target == "cpu" else ()
        return _summarize(_read_from(self.log_path, self._log_offset), noise)

    # -- stop

    def stop(self) -> int:
        """Stop the server, its stubs and their shared memory; return the exit code.

        Safe to call more than once and on a server that never started (returns 0).
        A server that had to be killed returns the negative signal number.
        """
        self._halt()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._backend_tmp is not None:
            shutil.rmtree(self._backend_tmp, ignore_errors=True)
            self._backend_tmp = None
        return self._exit_code if self._exit_code is not None else 0

    def _halt(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._terminate(proc)
        self._exit_code = proc.wait()
        self._proc = None
        self._cleanup_shm()
        log.info("tritonserver exited with code %s", self._exit_code)

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if exit_status(proc.pid) is None:
            # SIGINT is Triton's graceful shutdown: drain, unload models, exit.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            if not _wait_exited(proc.pid, self.exit_timeout_s + _STOP_MARGIN_S):
                log.warning("tritonserver %s ignored SIGINT; killing it", proc.pid)
        # The server is at least a zombie here, so the group id is still ours.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        left = _kill_and_wait(_group_stub_pids(proc.pid), _KILL_WAIT_S)
        if left:
            log.warning("python-backend stubs %s survived SIGKILL", left)

    def _cleanup_shm(self) -> None:
        # Only this server's regions: its private prefix tells them apart from
        # regions that other servers on the machine create meanwhile.
        ours = sorted(SHM_DIR.glob(f"{self._shm_prefix}*"))
        if not ours:
            return
        mapped = _mapped_paths()
        for path in ours:
            if str(path) not in mapped:
                path.unlink(missing_ok=True)
                log.debug("removed leftover %s", path)

    # -- wait and context manager

    def exited(self) -> bool:
        """True once the server process has ended (or was never started)."""
        return self._proc is None or exit_status(self._proc.pid) is not None

    def wait(self) -> int:
        """Block until the server exits by itself, clean up, return its exit code.

        Ctrl-C raises KeyboardInterrupt here; the caller then calls :meth:`stop`.
        """
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        return self.stop()

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()
