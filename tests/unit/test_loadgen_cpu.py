"""The bench's CPU columns and its choice of tool: real /proc readings, the fake perf_analyzer on PATH."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from tasks.bench import cpuuse, metrics, perfrun
from tests.helpers import FAKES


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_process_cpu_from_proc_follows_the_process_own_count() -> None:
    before = cpuuse.process_cpu_s(os.getpid())
    _spin(0.3)
    after = cpuuse.process_cpu_s(os.getpid())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    assert before is not None
    assert after is not None
    assert after - before >= 0.25  # clock ticks: a hundredth of a second each
    assert after <= usage.ru_utime + usage.ru_stime + 0.05


def test_a_gone_process_reads_none() -> None:
    assert cpuuse.process_cpu_s(2**22 + 12345) is None


def test_reader_sums_the_server_tree_and_sees_the_machine_busy() -> None:
    read = cpuuse.reader(lambda: [os.getpid(), 2**22 + 12345])
    first = read()
    _spin(0.3)
    second = read()
    assert first.server_s is not None
    assert second.server_s is not None
    assert second.server_s - first.server_s >= 0.25
    assert second.client_s - first.client_s >= 0.25
    assert second.machine_s is not None
    assert first.machine_s is not None
    assert second.machine_s - first.machine_s >= 0.25


def test_usage_row_gives_cores_and_cpu_per_request() -> None:
    before = cpuuse.Reading(client_s=10.0, server_s=100.0, machine_s=1000.0)
    after = cpuuse.Reading(client_s=10.5, server_s=102.0, machine_s=1003.0)
    row = cpuuse.usage_row(before, after, seconds=2.0, requests=500)
    assert row == {
        metrics.CLIENT_CPU: pytest.approx(0.25),
        metrics.SERVER_CPU: pytest.approx(1.0),
        metrics.MACHINE_CPU: pytest.approx(1.5),
        metrics.CLIENT_CPU_PER_REQUEST: pytest.approx(1000.0),
        metrics.SERVER_CPU_PER_REQUEST: pytest.approx(4000.0),
    }
    unknown = cpuuse.usage_row(cpuuse.Reading(1.0, None, None), cpuuse.Reading(2.0, None, None), 1.0, 10)
    assert unknown[metrics.SERVER_CPU] is None
    assert unknown[metrics.MACHINE_CPU] is None
    assert unknown[metrics.CLIENT_CPU] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("client", "machine", "expected"),
    [
        (0.1, 1.0, None),
        (0.7, 1.0, "the client used 0.70 cores"),
        (0.1, 1.95, "the machine was busy on 1.95 of 2 cores"),
        (None, None, None),
    ],
)
def test_a_starved_level_says_why(client: float | None, machine: float | None, expected: str | None) -> None:
    assert cpuuse.starved({metrics.CLIENT_CPU: client, metrics.MACHINE_CPU: machine}, cores=2) == expected


def test_auto_is_perf_analyzer_when_it_is_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    assert perfrun.resolve_tool("auto") == "perf_analyzer"
    assert perfrun.resolve_tool("builtin") == "builtin"  # an explicit choice wins


def test_auto_is_builtin_without_perf_analyzer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert perfrun.resolve_tool("auto") == "builtin"
    assert perfrun.resolve_tool("perf_analyzer") == "perf_analyzer"  # find_tool then says it is missing
