"""Benchmark rows: perf_analyzer's columns and genai-perf's LLM metrics, from raw samples.

A row is a mapping from column name to value; ``None`` means "not measured" (an empty CSV
cell, ``null`` in JSON), never zero.  Times in the perf_analyzer columns are microseconds,
the LLM latencies milliseconds, as in the tools they come from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Row = dict[str, float | None]

CONCURRENCY = "Concurrency"
THROUGHPUT = "Inferences/Second"
CLIENT_SEND = "Client Send"
NETWORK = "Network+Server Send/Recv"
SERVER_QUEUE = "Server Queue"
COMPUTE_INPUT = "Server Compute Input"
COMPUTE_INFER = "Server Compute Infer"
COMPUTE_OUTPUT = "Server Compute Output"
CLIENT_RECV = "Client Recv"
PERCENTILES = (50, 90, 95, 99)
AVG_LATENCY = "Avg latency"
SERVER_COLUMNS = (SERVER_QUEUE, COMPUTE_INPUT, COMPUTE_INFER, COMPUTE_OUTPUT)
# perf_analyzer's --verbose-csv header for a non-decoupled model with server statistics.
PA_COLUMNS = (
    CONCURRENCY,
    THROUGHPUT,
    CLIENT_SEND,
    NETWORK,
    *SERVER_COLUMNS,
    CLIENT_RECV,
    *(f"p{p} latency" for p in PERCENTILES),
    AVG_LATENCY,
)

# genai-perf's metric names; each distribution gets avg, p50, p90, p99 columns.
TTFT = "Time To First Token (ms)"
ITL = "Inter Token Latency (ms)"
REQUEST_LATENCY = "Request Latency (ms)"
OSL = "Output Sequence Length (tokens)"
ISL = "Input Sequence Length (tokens)"
LLM_DISTRIBUTIONS = (TTFT, ITL, REQUEST_LATENCY, OSL, ISL)
LLM_STATS = ("avg", "p50", "p90", "p99")
OUTPUT_TOKEN_THROUGHPUT = "Output Token Throughput (tokens/sec)"  # noqa: S105 - a column name
REQUEST_THROUGHPUT = "Request Throughput (per sec)"
LLM_COLUMNS = (
    *(f"{metric} {stat}" for metric in LLM_DISTRIBUTIONS for stat in LLM_STATS),
    OUTPUT_TOKEN_THROUGHPUT,
    REQUEST_THROUGHPUT,
)

# The CPU each side used over the measurement (after the tools' columns; the project's own).
CLIENT_CPU = "Client CPU (cores)"
SERVER_CPU = "Server CPU (cores)"
MACHINE_CPU = "Machine CPU (cores)"
CLIENT_CPU_PER_REQUEST = "Client CPU per Request (us)"
SERVER_CPU_PER_REQUEST = "Server CPU per Request (us)"
CPU_COLUMNS = (CLIENT_CPU, SERVER_CPU, MACHINE_CPU, CLIENT_CPU_PER_REQUEST, SERVER_CPU_PER_REQUEST)


def columns(llm: bool) -> tuple[str, ...]:  # noqa: FBT001 - one obvious switch
    """The CSV header: perf_analyzer's columns, then the LLM metrics for LLMs."""
    return PA_COLUMNS + LLM_COLUMNS if llm else PA_COLUMNS


def llm_column(metric: str, stat: str) -> str:
    return f"{metric} {stat}"


def percentile_column(p: int) -> str:
    return f"p{p} latency"


@dataclass(frozen=True)
class ServerTimes:
    """Average server-side time per request, microseconds, over one measurement."""

    queue: float
    compute_input: float
    compute_infer: float
    compute_output: float

    @property
    def total(self) -> float:
        return self.queue + self.compute_input + self.compute_infer + self.compute_output

    def as_row(self) -> Row:
        return {
            SERVER_QUEUE: self.queue,
            COMPUTE_INPUT: self.compute_input,
            COMPUTE_INFER: self.compute_infer,
            COMPUTE_OUTPUT: self.compute_output,
        }


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    """avg, p50, p90, p99 of *values* (linear interpolation, as numpy and genai-perf do); None when empty."""
    if not values:
        return dict.fromkeys(LLM_STATS)
    arr = np.asarray(values, dtype=np.float64)
    stats: dict[str, float | None] = {"avg": float(arr.mean())}
    for p in (50, 90, 99):
        stats[f"p{p}"] = float(np.percentile(arr, p))
    return stats


@dataclass(frozen=True)
class ClientSamples:
    """What the client saw of the requests completed in one measurement, times in nanoseconds."""

    duration_ns: int
    latencies_ns: Sequence[int]
    send_ns: Sequence[int]
    recv_ns: Sequence[int]
    batch_size: int = 1


def latency_row(concurrency: int, client: ClientSamples, server: ServerTimes | None) -> Row:
    """perf_analyzer's columns for one concurrency level.

    As in perf_analyzer, "Network+Server Send/Recv" is what remains of the average latency
    once client send/recv and the server's queue and compute time are taken out, never < 0.
    """
    lat_us = np.asarray(client.latencies_ns, dtype=np.float64) / 1000.0
    if lat_us.size == 0:
        msg = "no request completed in the measurement"
        raise ValueError(msg)
    avg = float(lat_us.mean())
    send = float(np.mean(client.send_ns)) / 1000.0 if len(client.send_ns) else 0.0
    recv = float(np.mean(client.recv_ns)) / 1000.0 if len(client.recv_ns) else 0.0
    row: Row = {
        CONCURRENCY: float(concurrency),
        THROUGHPUT: lat_us.size * client.batch_size / (client.duration_ns / 1e9),
        CLIENT_SEND: send,
        CLIENT_RECV: recv,
        AVG_LATENCY: avg,
    }
    for p in PERCENTILES:
        row[percentile_column(p)] = float(np.percentile(lat_us, p))
    if server is None:
        row.update(dict.fromkeys((*SERVER_COLUMNS, NETWORK)))
    else:
        row.update(server.as_row())
        row[NETWORK] = max(0.0, avg - send - recv - server.total)
    return row


@dataclass(frozen=True)
class TokenSamples:
    """Per-request token facts of one measurement (times in nanoseconds; TTFT only when streamed)."""

    duration_ns: int
    latencies_ns: Sequence[int]
    first_token_ns: Sequence[int] | None
    output_tokens: Sequence[int]
    input_tokens: Sequence[int]


def _inter_token_ms(samples: TokenSamples) -> list[float]:
    # genai-perf: (request latency - time to first token) / (output tokens - 1), per request.
    if samples.first_token_ns is None:
        return []
    return [
        (lat - first) / 1e6 / (n - 1)
        for lat, first, n in zip(samples.latencies_ns, samples.first_token_ns, samples.output_tokens, strict=True)
        if n > 1
    ]


def llm_row(samples: TokenSamples) -> Row:
    """genai-perf's metrics for one concurrency level; TTFT and ITL stay empty when not streamed."""
    seconds = samples.duration_ns / 1e9
    dists: Mapping[str, Sequence[float]] = {
        TTFT: [t / 1e6 for t in samples.first_token_ns] if samples.first_token_ns is not None else [],
        ITL: _inter_token_ms(samples),
        REQUEST_LATENCY: [t / 1e6 for t in samples.latencies_ns],
        OSL: [float(n) for n in samples.output_tokens],
        ISL: [float(n) for n in samples.input_tokens],
    }
    row: Row = {}
    for metric, values in dists.items():
        for stat, value in distribution(values).items():
            row[llm_column(metric, stat)] = value
    row[OUTPUT_TOKEN_THROUGHPUT] = sum(samples.output_tokens) / seconds
    row[REQUEST_THROUGHPUT] = len(samples.latencies_ns) / seconds
    return row
