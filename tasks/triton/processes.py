"""Free ports, the processes of a server (its group, python-backend stubs, their exit), what its log says."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from tasks.core import procstat
from tasks.core.errors import UserError
from tasks.triton.argv import STUB_NAME, Ports

_TAIL_LINES = 20
_HEALTH_TIMEOUT_S = 1.0
_MAPS_FIELDS = 6
_IPV6 = 6
# glog error/fatal prefixes ("E1126 16:01:30.5 ...") or an error word anywhere.
_ERROR_LINE = re.compile(r"^[EF]\d{4} |error|fail|exception|in use", re.IGNORECASE)


# -------------------------------------------------------------------------- ports


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def check_address(address: str, variable: str = "address") -> None:
    """Refuse an *address* this machine cannot listen on, naming the *variable* it came from.

    Without this, a bind failure on a bad address reads as "port already in use".
    """
    try:
        with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError as exc:  # gaierror for a malformed or unknown name, EADDRNOTAVAIL for another host's
        reason = exc.strerror or str(exc)
        msg = f"{address[:100]!r} is not a valid address for this machine to listen on ({reason})"
        raise UserError(variable, msg) from None


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


def busy_port(address: str, ports: Ports) -> int | None:
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


def host_port(address: str, port: int) -> str:
    host = _connect_host(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ready(url: str) -> bool:
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
    found = procstat.fields(pid)
    if found is None:
        return None
    return _ProcStat(state=found[procstat.STATE], pgrp=int(found[procstat.PGRP]), session=int(found[procstat.SESSION]))


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


def group_stub_pids(group: int) -> list[int]:
    return [pid for pid in live_stub_pids() if (stat := _proc_stat(pid)) is not None and group in (stat.pgrp, stat.session)]


def mapped_paths() -> set[str]:
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


def wait_exited(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while exit_status(pid) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def kill_and_wait(pids: list[int], timeout_s: float) -> list[int]:
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


def read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def summarize(text: str, noise: tuple[str, ...]) -> str:
    """Pick the log lines that explain a failure: errors if any, else the tail.

    Triton prints its status tables and shutdown chatter after the real error, so
    the last lines alone rarely say why a model failed to load.
    """
    lines = [
        line for line in text.splitlines() if line.strip() and not line.startswith(("|", "+", "#")) and not any(n in line for n in noise)
    ]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    return "\n".join((errors or lines)[-_TAIL_LINES:])
