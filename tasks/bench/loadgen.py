"""The built-in load generator: perf_analyzer's concurrency mode over Triton's gRPC API.

``concurrency`` requests are kept in flight at all times: for a unary model each completion's
callback (on gRPC's thread) sends that slot's next request, so the client runs no thread of its
own per request; a decoupled model's streams are read by one thread per slot.  Time is cut into
measurement windows; a level ends when the last three windows agree on throughput and average
latency within the stability percentage (perf_analyzer's rule), or after ``max_trials`` windows,
and is reported over those last three windows.  Each window boundary also reads the CPU time of
the client, the server and the machine (:mod:`tasks.bench.cpuuse`), so a level says what it cost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tasks.bench import cpuuse, serverstats
from tasks.bench.grpcclient import Client, Payload, Sample, ServedModel
from tasks.core import interrupts
from tasks.core.errors import UserError

__all__ = ["STABLE_WINDOWS", "Client", "Level", "Payload", "Sample", "ServedModel", "Settings", "is_stable", "measure", "warm_up"]

STABLE_WINDOWS = 3  # perf_analyzer's stability window count
_JOIN_MARGIN_S = 5.0


@dataclass(frozen=True)
class Settings:
    measurement_interval_s: float
    stability_percentage: float
    max_trials: int


@dataclass(frozen=True)
class Mark:
    """A window boundary: the time, how many samples had completed, the server's counters, the CPU used so far."""

    ns: int
    count: int
    stats: serverstats.Snapshot
    cpu: cpuuse.Reading


@dataclass
class Level:
    """One concurrency level, reported over its last (up to three) windows."""

    concurrency: int
    samples: list[Sample]
    duration_ns: int
    before: serverstats.Snapshot
    after: serverstats.Snapshot
    windows: int
    stable: bool
    cpu_before: cpuuse.Reading
    cpu_after: cpuuse.Reading


def _window_metrics(samples: Sequence[Sample], a: Mark, b: Mark) -> tuple[float, float]:
    chunk = samples[a.count : b.count]
    seconds = (b.ns - a.ns) / 1e9
    if not chunk:
        return 0.0, 0.0
    return len(chunk) / seconds, sum(s.latency_ns for s in chunk) / len(chunk)


def is_stable(windows: Sequence[tuple[float, float]], percentage: float) -> bool:
    """perf_analyzer's rule: each of the last three windows within ±percentage of their mean, for both metrics."""
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    band = percentage / 100.0
    for metric in (0, 1):
        values = [w[metric] for w in last]
        mean = sum(values) / len(values)
        if mean <= 0 or any(abs(v / mean - 1.0) > band for v in values):
            return False
    return True


class _Slots:
    """``concurrency`` slots, each with one request in flight until stopped or failed.

    A slot that ends releases ``_ended`` once; :meth:`stop` waits for every slot.
    """

    def __init__(self, client: Client, concurrency: int, prompts: int) -> None:
        self.samples: list[Sample] = []
        self._client = client
        self.concurrency = concurrency
        self._prompts = max(prompts, 1)
        self._stop = threading.Event()
        self._ended = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._client.streaming:
            self._threads = [
                threading.Thread(target=self._loop, args=(slot,), name=f"bench-{slot}", daemon=True) for slot in range(self.concurrency)
            ]
            for thread in self._threads:
                thread.start()
            return
        for slot in range(self.concurrency):
            self._send(slot % self._prompts)

    # -- unary: the completion of one request sends the next

    def _send(self, index: int) -> None:
        self._client.send(index, lambda sample: self._done(index, sample))

    def _done(self, index: int, sample: Sample) -> None:
        self.samples.append(sample)
        if sample.error is not None or self._stop.is_set():
            self._ended.release()
            return
        try:
            self._send(index + self.concurrency)
        except ValueError:  # the channel was closed (Ctrl-C, a failure): the slot ends
            self._ended.release()

    # -- streaming: one blocking stream after another per thread

    def _loop(self, slot: int) -> None:
        index = slot % self._prompts
        append = self.samples.append
        try:
            while not self._stop.is_set():
                sample = self._client.infer(index)
                append(sample)
                if sample.error is not None:
                    return
                index += self.concurrency
        finally:
            self._ended.release()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for _ in range(self.concurrency):
            if not self._ended.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return

    def first_error(self, since: int) -> Sample | None:
        return next((s for s in self.samples[since:] if s.error is not None), None)


def _failed(client: Client, concurrency: int, bad: Sample, samples: Sequence[Sample]) -> UserError:
    failed = sum(1 for s in samples if s.error is not None)
    msg = f"{failed} of {len(samples)} requests to {client.model} failed at concurrency {concurrency}; first error: {bad.error}"
    return UserError("bench", msg)


def _mark(client: Client, slots: _Slots, cpu: Callable[[], cpuuse.Reading]) -> Mark:
    return Mark(time.perf_counter_ns(), len(slots.samples), client.stats(), cpu())


def _windows(
    client: Client, slots: _Slots, marks: list[Mark], settings: Settings, cpu: Callable[[], cpuuse.Reading]
) -> list[tuple[float, float]]:
    windows: list[tuple[float, float]] = []
    for _ in range(settings.max_trials):
        time.sleep(settings.measurement_interval_s)
        interrupts.raise_if_interrupted()
        marks.append(_mark(client, slots, cpu))
        bad = slots.first_error(marks[-2].count)
        if bad is not None:
            raise _failed(client, slots.concurrency, bad, slots.samples)
        windows.append(_window_metrics(slots.samples, marks[-2], marks[-1]))
        if is_stable(windows, settings.stability_percentage):
            break
    return windows


def measure(
    client: Client, concurrency: int, settings: Settings, prompts: int, server_pids: Callable[[], Sequence[int]] | None = None
) -> Level:
    """Run one concurrency level until stable (or ``max_trials`` windows) and return its last windows.

    *server_pids* lists the server's processes (tritonserver and its backend stubs) for its CPU time.
    """
    cpu = cpuuse.reader(server_pids)
    slots = _Slots(client, concurrency, prompts)
    marks = [_mark(client, slots, cpu)]
    slots.start()
    try:
        windows = _windows(client, slots, marks, settings, cpu)
    except BaseException:
        # Ctrl-C or a failure: closing the channel cancels the requests in flight, so no
        # slot keeps the server busy while it is being stopped.
        client.close()
        slots.stop(_JOIN_MARGIN_S)
        raise
    slots.stop(client.timeout_s + _JOIN_MARGIN_S)
    first = marks[max(0, len(marks) - 1 - STABLE_WINDOWS)]
    last = marks[-1]
    samples = slots.samples[first.count : last.count]
    if not samples:
        waited = (last.ns - marks[0].ns) / 1e9
        raise UserError("bench", f"no request to {client.model} completed in {waited:.1f} s at concurrency {concurrency}")
    stable = is_stable(windows, settings.stability_percentage)
    return Level(concurrency, samples, last.ns - first.ns, first.stats, last.stats, len(windows), stable, first.cpu, last.cpu)


def warm_up(client: Client, requests: int) -> None:
    """A few sequential requests: lazy initialisation (first batch, allocator) stays out of the windows."""
    for index in range(requests):
        sample = client.infer(index)
        if sample.error is not None:
            raise UserError("bench", f"warm-up request to {client.model} failed: {sample.error}")
