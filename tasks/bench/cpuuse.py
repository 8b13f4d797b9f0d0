"""CPU time of the load generator, the server and the whole machine, so a starved measurement shows.

On a small machine the client competes with the server for the same cores: a client that takes
a large share, or a machine with no idle core left, means the server was measured short of CPU.
Readings come from ``/proc`` (Linux) and ``resource``; where ``/proc`` is missing they are None.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.bench import metrics
from tasks.core import procstat

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
# The warning thresholds: the client's share of one core, the machine's share of all cores.
CLIENT_WARN_CORES = 0.5
MACHINE_WARN_SHARE = 0.9


def self_cpu_s() -> float:
    """CPU seconds of this process (all its threads, gRPC's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have exited and been waited for (an external tool)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float | None:
    """One live process's CPU seconds, None once it is gone."""
    found = procstat.fields(pid)
    return None if found is None else (int(found[procstat.UTIME]) + int(found[procstat.STIME])) * _TICK_S


def machine_busy_s() -> float | None:
    """CPU seconds all cores spent on anything but idling since boot."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) * _TICK_S


@dataclass(frozen=True)
class Reading:
    client_s: float
    server_s: float | None
    machine_s: float | None


def reader(server_pids: Callable[[], Sequence[int]] | None, client: Callable[[], float] = self_cpu_s) -> Callable[[], Reading]:
    """A function that reads the client's CPU (*client*), the server tree's and the machine's."""

    def read() -> Reading:
        server = None
        if server_pids is not None:
            times = [process_cpu_s(pid) for pid in server_pids()]
            server = sum(t for t in times if t is not None) if any(t is not None for t in times) else None
        return Reading(client(), server, machine_busy_s())

    return read


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(0.0, b - a)


def usage_row(before: Reading, after: Reading, seconds: float, requests: float) -> metrics.Row:
    """The CPU columns for one measurement of *requests* requests over *seconds*."""
    client = _delta(before.client_s, after.client_s)
    server = _delta(before.server_s, after.server_s)
    machine = _delta(before.machine_s, after.machine_s)

    def cores(cpu: float | None) -> float | None:
        return None if cpu is None or seconds <= 0 else cpu / seconds

    def per_request_us(cpu: float | None) -> float | None:
        return None if cpu is None or requests <= 0 else cpu / requests * 1e6

    return {
        metrics.CLIENT_CPU: cores(client),
        metrics.SERVER_CPU: cores(server),
        metrics.MACHINE_CPU: cores(machine),
        metrics.CLIENT_CPU_PER_REQUEST: per_request_us(client),
        metrics.SERVER_CPU_PER_REQUEST: per_request_us(server),
    }


def starved(row: metrics.Row, cores: int | None = None) -> str | None:
    """Why this level's server may have been short of CPU, or None."""
    total = cores or os.cpu_count() or 1
    client, machine = row.get(metrics.CLIENT_CPU), row.get(metrics.MACHINE_CPU)
    reasons = []
    if client is not None and client >= CLIENT_WARN_CORES:
        reasons.append(f"the client used {client:.2f} cores")
    if machine is not None and machine >= MACHINE_WARN_SHARE * total:
        reasons.append(f"the machine was busy on {machine:.2f} of {total} cores")
    return "; ".join(reasons) if reasons else None
