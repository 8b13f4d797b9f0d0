"""The built-in load generator's wire: Triton's gRPC API, at the least client CPU per request.

A unary request is serialised once, when the payloads are set: the hot path hands those bytes to
gRPC as they are and gets the response's bytes back undecoded (only an LLM's text output is
parsed), so a request costs the client no protobuf message and no Python object beyond its
:class:`Sample`.  :meth:`Client.send` starts a request and returns at once; its callback runs on
gRPC's own thread when the response arrives, so keeping N requests in flight takes no thread per
request.  Decoupled models are driven through the bidirectional stream (:meth:`Client.infer`),
one blocking stream per request, so each token's arrival time is seen.
"""

from __future__ import annotations

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
from tasks.core.errors import UserError

_FINAL = "triton_final_response"
_EMPTY_FINAL = "triton_enable_empty_final_response"
_MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
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


def _rpc_error(exc: grpc.RpcError) -> str:
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return str(details or exc).splitlines()[0]


Done = Callable[[Sample], None]


class Client:
    """gRPC connection to one served model; ``infer`` and ``send`` are safe to call from many threads."""

    def __init__(self, url: str, model: str, *, timeout_s: float, text_output: str | None = None) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.text_output = text_output
        self.streaming = False
        self._channel = grpc.insecure_channel(url, options=_CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        # Bytes in, bytes out: no protobuf message is built or parsed per request.
        self._infer_raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            _MODEL_INFER, request_serializer=None, response_deserializer=None
        )
        self._payloads: tuple[Payload, ...] = ()
        self._bodies: tuple[bytes, ...] = ()

    @property
    def payloads(self) -> Sequence[Payload]:
        return self._payloads

    @payloads.setter
    def payloads(self, payloads: Sequence[Payload]) -> None:
        self._payloads = tuple(payloads)
        self._bodies = tuple(self._request(p).SerializeToString() for p in self._payloads)

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

    def send(self, index: int, done: Done) -> None:
        """Start request *index* (unary) and return; *done* gets its :class:`Sample` on gRPC's thread."""
        start = time.perf_counter_ns()
        future = self._infer_raw.future(self._bodies[index % len(self._bodies)], timeout=self.timeout_s)
        sent = time.perf_counter_ns()
        future.add_done_callback(lambda f: done(self._finish(f, start, sent, index)))

    def _finish(self, future: grpc.Future[bytes], start: int, sent: int, index: int) -> Sample:
        got = time.perf_counter_ns()
        try:
            raw = future.result()
        except grpc.RpcError as exc:
            return Sample(start, got, sent - start, 0, -1, None, index, _rpc_error(exc))
        except grpc.FutureCancelledError:
            return Sample(start, got, sent - start, 0, -1, None, index, "cancelled")
        if self.text_output is None:
            return Sample(start, got, sent - start, 0, -1, None, index)
        text = _decode_text(service_pb2.ModelInferResponse.FromString(raw), self.text_output)
        end = time.perf_counter_ns()
        return Sample(start, end, sent - start, end - got, -1, text, index)

    def infer(self, index: int) -> Sample:
        """One request, blocking: a stream for a decoupled model, else a unary call."""
        if not self.streaming:
            return self._send_wait(index)
        payload = self._payloads[index % len(self._payloads)]
        start = time.perf_counter_ns()
        request = self._request(payload)
        sent = time.perf_counter_ns()
        try:
            return self._stream(request, start, sent, index)
        except grpc.RpcError as exc:
            now = time.perf_counter_ns()
            return Sample(start, now, sent - start, 0, -1, None, index, _rpc_error(exc))

    def _send_wait(self, index: int) -> Sample:
        got: list[Sample] = []
        arrived = threading.Event()

        def done(sample: Sample) -> None:
            got.append(sample)
            arrived.set()

        self.send(index, done)
        arrived.wait()  # the call has a deadline, so the callback always comes
        return got[0]

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
