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
Each start is recorded (``tasks.triton.runs``) so that what a launcher killed with
SIGKILL leaves behind is removed at the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

from tasks.core import interrupts
from tasks.tools import toolchain
from tasks.triton import runs
from tasks.triton.argv import Ports, ServerError, check_target, prepare_backend_dir, server_command
from tasks.triton.compat import check_repository_toolchain
from tasks.triton.processes import (
    busy_port,
    exit_status,
    group_stub_pids,
    host_port,
    kill_and_wait,
    mapped_paths,
    pick_free_ports,
    read_from,
    ready,
    summarize,
    wait_exited,
)
from tasks.triton.ranks import Ranks, check_gpus, leader_mode_command
from tasks.triton.runs import SHM_DIR, SHM_PREFIX

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from types import TracebackType
_POLL_S = 0.2
_PR_SET_PDEATHSIG = 1
# On top of --exit-timeout-secs: Triton still has to unload models and join stubs.
_STOP_MARGIN_S = 10.0
_KILL_WAIT_S = 5.0
_PORT_RETRIES = 3
# Every GPU-less start prints these; they never explain a failure on the cpu target.
_CPU_NOISE = ("CudaDriverHelper", "NVML", "DCGM", "pinned memory", "CUDA memory pool")
_IN_USE = re.compile(r":(\d+)'? already in use")


# ------------------------------------------------------------------------- server


class _PortClashError(Exception):
    def __init__(self, port: int, tail: str) -> None:
        super().__init__(port)
        self.port = port
        self.tail = tail


def _stop_with_parent(parent: int) -> None:
    """In the child before exec: get SIGINT (graceful stop) when the launching process dies.

    The server runs in its own session so Ctrl-C reaches only the launcher; without
    this, a launcher killed with SIGKILL would leave the server running for good.
    SIGINT is reset to its default first: a launcher started in the background by a
    shell ignores it, and an ignored signal would stay ignored in the server.  Only
    async-signal-safe libc calls here (the launcher may have threads).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal(signal.SIGINT, signal.SIG_DFL)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
    # The launcher may have died between fork and prctl: then no signal would ever come.
    if os.getppid() != parent:
        os._exit(1)


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
        runs_dir: Path = runs.DEFAULT_DIR,
    ) -> None:
        """Describe a server; nothing runs until :meth:`start`.

        With *ports* None, free ports are picked at start (and re-picked on a clash).  Each
        start is recorded in *runs_dir*, and dead runs recorded there are reaped first.  *ranks*
        with a world size above 1 starts one process per rank under mpirun on ``trt``; on
        ``cpu`` the stand-in models run every rank's work in one process.
        """
        check_target(target)
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
        self.runs_dir = runs_dir
        self._record: Path | None = None

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
        return host_port(self.address, self.ports.http)

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return host_port(self.address, self.ports.grpc)

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
        return group_stub_pids(self._proc.pid) if self._proc is not None else []

    # -- start

    def start(self) -> None:
        """Launch the server and wait until it is ready, else raise ServerError.

        Does nothing if the server is already running.  On failure everything that
        was started is stopped again before the error propagates.
        """
        if self._proc is not None:
            return
        runs.reap(self.runs_dir)
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
        busy = busy_port(self.address, self._explicit_ports)
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
        parent = os.getpid()
        with interrupts.uninterrupted():
            self._proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _stop_with_parent(parent),  # noqa: PLW1509 - ctypes calls only, see there
            )
            self._record = runs.record(self.runs_dir, self._proc.pid, backend_dir, self._shm_prefix)
        return self._proc

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        # Triton binds gRPC, HTTP, then metrics, and answers health before metrics is
        # bound: a metrics clash would only show after "ready" without this check.
        urls = [
            f"http://{self.http_url}/v2/health/ready",
            f"http://{host_port(self.address, self.ports.metrics)}/metrics",
        ]
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if exit_status(proc.pid) is not None:
                self._raise_exited(proc)
            if all(ready(url) for url in urls) and exit_status(proc.pid) is None:
                return
            if time.monotonic() >= deadline:
                msg = f"not ready after {self.startup_timeout_s:g} s"
                tail = self._log_tail()
                raise ServerError(msg, log_path=self.log_path, log_tail=tail)
            interrupts.raise_if_interrupted()
            time.sleep(_POLL_S)

    def _raise_exited(self, proc: subprocess.Popen[bytes]) -> None:
        clash = _IN_USE.search(read_from(self.log_path, self._log_offset))
        if clash is not None:
            raise _PortClashError(int(clash.group(1)), self._log_tail())
        msg = f"exited with code {exit_status(proc.pid)} before becoming ready"
        raise ServerError(msg, log_path=self.log_path, log_tail=self._log_tail())

    def _log_tail(self) -> str:
        noise = _CPU_NOISE if self.target == "cpu" else ()
        return summarize(read_from(self.log_path, self._log_offset), noise)

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
        runs.forget(self._record)
        self._record = None
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
            if not wait_exited(proc.pid, self.exit_timeout_s + _STOP_MARGIN_S):
                log.warning("tritonserver %s ignored SIGINT; killing it", proc.pid)
        # The server is at least a zombie here, so the group id is still ours.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        left = kill_and_wait(group_stub_pids(proc.pid), _KILL_WAIT_S)
        if left:
            log.warning("python-backend stubs %s survived SIGKILL", left)

    def _cleanup_shm(self) -> None:
        # Only this server's regions: its private prefix tells them apart from
        # regions that other servers on the machine create meanwhile.
        ours = sorted(SHM_DIR.glob(f"{self._shm_prefix}*"))
        if not ours:
            return
        mapped = mapped_paths()
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
