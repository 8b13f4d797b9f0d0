"""The built-in load generator: perf_analyzer's concurrency mode over Triton's gRPC API.

``concurrency`` worker threads each keep one request in flight at all times.  Time is cut
into measurement windows; a level ends when the last three windows agree on throughput and
average latency within the stability percentage (perf_analyzer's rule), or after
``max_trials`` windows, and is reported over those last three windows.  Decoupled models
are driven through the bidirectional stream so each token's arrival time is seen.

The hot loop talks to the generated gRPC stub of ``tritonclient`` with request messages
built from pre-serialised tensors: the generator should cost the client no more than a
plain ``tritonclient`` loop does.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import np_to_triton_dtype

from tasks.bench import serverstats
from tasks.core import interrupts
from tasks.core.errors import UserError

log = logging.getLogger(__name__)

STABLE_WINDOWS = 3  # perf_analyzer's stability window count
_FINAL = "triton_final_response"
_EMPTY_FINAL = "triton_enable_empty_final_response"
_JOIN_MARGIN_S = 5.0
_UNLIMITED = -1
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", _UNLIMITED), ("grpc.max_receive_message_length", _UNLIMITED)]


def _bytes_tensor(array: np.ndarray[Any, Any]) -> bytes:
    # Triton's BYTES wire format: each element as a little-endian uint32 length, then the bytes.
    items = [item if isinstance(item, bytes) else str(item).encode() for item in array.reshape(-1)]
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


@dataclass(frozen=True)
class Payload:
    """One request's inputs, serialised once up front."""

    tensors: tuple[service_pb2.ModelInferRequest.InferInputTensor, ...]
    raw: tuple[bytes, ...]

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray[Any, Any]]) -> Self:
        tensors, raw = [], []
        for name, array in arrays.items():
            datatype = "BYTES" if array.dtype == np.object_ else np_to_triton_dtype(array.dtype)
            tensors.append(service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(array.shape)))
            raw.append(_bytes_tensor(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes())
        return cls(tuple(tensors), tuple(raw))


@dataclass
class Sample:
    """One request as the client saw it; times from ``time.perf_counter_ns``."""

    start_ns: int
    end_ns: int
    send_ns: int  # building the request message
    recv_ns: int  # turning responses into arrays / text
    first_ns: int  # first response with output (streaming), else -1
    text: str | None
    prompt: int
    error: str | None = None
    responses: int = 1  # responses that carried output (one per token when streamed)

    @property
    def latency_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True)
class ServedModel:
    name: str
    server_version: str
    composing: tuple[str, ...]
    decoupled: bool


def _decode_text(response: service_pb2.ModelInferResponse, output: str) -> str:
    for i, tensor in enumerate(response.outputs):
        if tensor.name == output and i < len(response.raw_output_contents):
            raw = response.raw_output_contents[i]
            pieces, offset = [], 0
            while offset < len(raw):
                (size,) = struct.unpack_from("<I", raw, offset)
                pieces.append(raw[offset + 4 : offset + 4 + size].decode(errors="replace"))
                offset += 4 + size
            return "".join(pieces)
    return ""


def _touch_outputs(response: service_pb2.ModelInferResponse) -> None:
    # What any client does with a numeric result: view the bytes as an array.
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        if tensor.datatype != "BYTES":
            np.frombuffer(raw, dtype=np.uint8)


def _rpc_error(exc: grpc.RpcError) -> str:
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return str(details or exc).splitlines()[0]


class Client:
    """gRPC connection to one served model; ``infer`` is safe to call from many threads."""

    def __init__(self, url: str, model: str, *, timeout_s: float, text_output: str | None = None) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.text_output = text_output
        self.streaming = False
        self._channel = grpc.insecure_channel(url, options=_CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self.payloads: Sequence[Payload] = ()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- model facts

    def _config(self, name: str) -> Any:  # noqa: ANN401 - a ModelConfig message
        try:
            return self._stub.ModelConfig(service_pb2.ModelConfigRequest(name=name), timeout=self.timeout_s).config
        except grpc.RpcError as exc:
            raise UserError("bench", f"Triton does not serve model {name!r}: {_rpc_error(exc)}") from None

    def describe(self) -> ServedModel:
        """Server version, the models a request runs through, and whether any of them is decoupled."""
        version = self._stub.ServerMetadata(service_pb2.ServerMetadataRequest(), timeout=self.timeout_s).version
        steps: dict[str, list[str]] = {}
        decoupled = False
        pending, seen = [self.model], set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            config = self._config(name)
            decoupled = decoupled or bool(config.model_transaction_policy.decoupled)
            if config.platform == "ensemble":
                steps[name] = [step.model_name for step in config.ensemble_scheduling.step]
                pending.extend(steps[name])
        composing = tuple(serverstats.composing_models(self.model, steps))
        return ServedModel(self.model, str(version), composing, decoupled)

    def stats(self) -> serverstats.Snapshot:
        request = service_pb2.ModelStatisticsRequest(name="", version="")
        return serverstats.snapshot_from_proto(self._stub.ModelStatistics(request, timeout=self.timeout_s))

    # -- requests

    def _request(self, payload: Payload) -> service_pb2.ModelInferRequest:
        request = service_pb2.ModelInferRequest(model_name=self.model, inputs=payload.tensors, raw_input_contents=payload.raw)
        if self.streaming:
            request.parameters[_EMPTY_FINAL].bool_param = True
        return request

    def infer(self, index: int) -> Sample:
        payload = self.payloads[index % len(self.payloads)]
        start = time.perf_counter_ns()
        request = self._request(payload)
        sent = time.perf_counter_ns()
        try:
            if self.streaming:
                return self._stream(request, start, sent, index)
            response = self._stub.ModelInfer(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            now = time.perf_counter_ns()
            return Sample(start, now, sent - start, 0, -1, None, index, _rpc_error(exc))
        got = time.perf_counter_ns()
        text = _decode_text(response, self.text_output) if self.text_output else None
        _touch_outputs(response)
        end = time.perf_counter_ns()
        return Sample(start, end, sent - start, end - got, -1, text, index)

    def _stream(self, request: service_pb2.ModelInferRequest, start: int, sent: int, index: int) -> Sample:
        # One stream per request: the stream's deadline is then the request's timeout.  The
        # stream is read to its end (the server closes it after the final response): a stream
        # left open holds the ensemble's request state and blocks the server's shutdown.
        first, end, decoding, responses, pieces = -1, -1, 0, 0, []
        for message in self._stub.ModelStreamInfer(iter((request,)), timeout=self.timeout_s):
            arrived = time.perf_counter_ns()
            if message.error_message:
                return Sample(start, arrived, sent - start, decoding, first, None, index, message.error_message.splitlines()[0], responses)
            response = message.infer_response
            if response.outputs:
                first = arrived if first < 0 else first
                responses += 1
                if self.text_output:
                    pieces.append(_decode_text(response, self.text_output))
                decoding += time.perf_counter_ns() - arrived
            final = response.parameters.get(_FINAL)
            if final is not None and final.bool_param:
                end = time.perf_counter_ns()
        end = end if end >= 0 else time.perf_counter_ns()
        return Sample(start, end, sent - start, decoding, first, "".join(pieces) if self.text_output else None, index, None, responses)


# ------------------------------------------------------------------------ measurement


@dataclass(frozen=True)
class Settings:
    measurement_interval_s: float
    stability_percentage: float
    max_trials: int


@dataclass(frozen=True)
class Mark:
    """A window boundary: the time, how many samples had completed, the server's counters."""

    ns: int
    count: int
    stats: serverstats.Snapshot


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


class _Workers:
    """``concurrency`` threads, each with one request in flight until stopped."""

    def __init__(self, call: Callable[[int], Sample], concurrency: int, prompts: int) -> None:
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(call, slot, concurrency, prompts), name=f"bench-{slot}", daemon=True)
            for slot in range(concurrency)
        ]

    def _loop(self, call: Callable[[int], Sample], slot: int, step: int, prompts: int) -> None:
        index = slot % max(prompts, 1)
        append = self.samples.append
        while not self._stop.is_set():
            sample = call(index)
            append(sample)
            if sample.error is not None:
                return
            index += step

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def first_error(self, since: int) -> Sample | None:
        return next((s for s in self.samples[since:] if s.error is not None), None)


def _failed(client: Client, concurrency: int, bad: Sample, samples: Sequence[Sample]) -> UserError:
    failed = sum(1 for s in samples if s.error is not None)
    msg = f"{failed} of {len(samples)} requests to {client.model} failed at concurrency {concurrency}; first error: {bad.error}"
    return UserError("bench", msg)


def _windows(client: Client, workers: _Workers, marks: list[Mark], settings: Settings, concurrency: int) -> list[tuple[float, float]]:
    windows: list[tuple[float, float]] = []
    for _ in range(settings.max_trials):
        time.sleep(settings.measurement_interval_s)
        interrupts.raise_if_interrupted()
        marks.append(Mark(time.perf_counter_ns(), len(workers.samples), client.stats()))
        bad = workers.first_error(marks[-2].count)
        if bad is not None:
            raise _failed(client, concurrency, bad, workers.samples)
        windows.append(_window_metrics(workers.samples, marks[-2], marks[-1]))
        if is_stable(windows, settings.stability_percentage):
            break
    return windows


def measure(client: Client, concurrency: int, settings: Settings, prompts: int) -> Level:
    """Run one concurrency level until stable (or ``max_trials`` windows) and return its last windows."""
    workers = _Workers(client.infer, concurrency, prompts)
    marks = [Mark(time.perf_counter_ns(), 0, client.stats())]
    workers.start()
    try:
        windows = _windows(client, workers, marks, settings, concurrency)
    except BaseException:
        # Ctrl-C or a failure: closing the channel cancels the requests in flight, so no
        # worker keeps the server busy while it is being stopped.
        client.close()
        workers.stop(_JOIN_MARGIN_S)
        raise
    workers.stop(client.timeout_s + _JOIN_MARGIN_S)
    first = marks[max(0, len(marks) - 1 - STABLE_WINDOWS)]
    last = marks[-1]
    samples = workers.samples[first.count : last.count]
    if not samples:
        waited = (last.ns - marks[0].ns) / 1e9
        raise UserError("bench", f"no request to {client.model} completed in {waited:.1f} s at concurrency {concurrency}")
    stable = is_stable(windows, settings.stability_percentage)
    return Level(concurrency, samples, last.ns - first.ns, first.stats, last.stats, len(windows), stable)


def warm_up(client: Client, requests: int) -> None:
    """A few sequential requests: lazy initialisation (first batch, allocator) stays out of the windows."""
    for index in range(requests):
        sample = client.infer(index)
        if sample.error is not None:
            raise UserError("bench", f"warm-up request to {client.model} failed: {sample.error}")
