"""The same requests to the cpu and the trt repository of one model, and the comparison of the answers.

LLMs: the ``ensemble`` model, one prompt per request, greedy (no ``top_k`` / ``top_p`` sent: both
the tensorrtllm backend and the cpu stand-in then decode greedily); the texts must be equal.
Encoders: the model's own ensemble, one text or image per request; the embeddings must have
cosine >= 0.999.  Each request is named by its key: the prompt or text itself, ``sha256:<hex>``
of an image's bytes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.commands.conformance import fixtures
from tasks.commands.conformance.project import Model
from tasks.core import fsops
from tasks.triton.launcher import TritonServer

MIN_COSINE = 0.999
MAX_TOKENS = 10
T5_PROMPTS = ["translate English to German: the house is wonderful", "a man is eating food", "summarize: triton serves models"]
DECODER_PROMPTS = ["a man is eating food", "the girl is carrying", "a monkey is playing drums on"]
TEXTS = ["a man is eating food", "a monkey is playing drums", "triton serves models on cpu and gpu"]

Answer = str | list[float]


@dataclass(frozen=True)
class Request:
    key: str
    payload: bytes
    modality: str  # the input's name: "text_input" (LLM), "text" or "image" (encoders)


def requests(model: Model) -> list[Request]:
    """What the kit asks ``model``, identical for both targets."""
    if model.kind == "llm":
        prompts = T5_PROMPTS if model.family == "t5" else DECODER_PROMPTS
        return [Request(p, p.encode(), "text_input") for p in prompts]
    if model.family == "clip-vision":
        return [Request(image_key(b), b, "image") for b in fixtures.generated_images()]
    return [Request(t, t.encode(), "text") for t in TEXTS]


def image_key(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def served_model(model: Model) -> str:
    """The Triton model the kit calls: the LLM ensemble, or the encoder's ensemble (named after the model)."""
    return "ensemble" if model.kind == "llm" else model.name


def ask(repo: Path, target: str, log: Path, model: Model) -> list[Answer]:
    """Serve ``repo`` with the target's tritonserver and send every request of ``model``."""
    import numpy as np  # noqa: PLC0415 - the client stack loads only when the kit serves
    import tritonclient.http as httpclient  # noqa: PLC0415

    with TritonServer(repo, target, log) as server:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=300.0)
        try:
            answers: list[Answer] = []
            for request in requests(model):
                tensors = [httpclient.InferInput(request.modality, [1, 1], "BYTES")]
                tensors[0].set_data_from_numpy(np.array([[request.payload]], dtype=np.object_))
                if model.kind == "llm":
                    tensors.append(httpclient.InferInput("max_tokens", [1, 1], "INT32"))
                    tensors[1].set_data_from_numpy(np.array([[MAX_TOKENS]], dtype=np.int32))
                result = client.infer(served_model(model), tensors)
                answers.append(_answer(model, result))
            return answers
        finally:
            client.close()


def output_name(model: Model) -> str:
    return "text_output" if model.kind == "llm" else "embedding"


def record(path: Path, model: Model, got: list[Answer]) -> None:
    """Keep what one target answered, as ``{repository: {model: {request key: {output: value}}}}``.

    The same shape as the canned answers of the tests' fake tritonserver, so a run's record of one
    target can stand in for that target's server.
    """
    data = fsops.read_json(path) if path.is_file() else {}
    data = data if isinstance(data, dict) else {}
    keyed = {r.key: {output_name(model): a} for r, a in zip(requests(model), got, strict=True)}
    data[model.name] = {served_model(model): keyed}
    path.parent.mkdir(parents=True, exist_ok=True)
    fsops.write_json_atomic(path, data)


def _answer(model: Model, result: Any) -> Answer:  # noqa: ANN401 - tritonclient's InferResult is untyped
    if model.kind == "llm":
        text = result.as_numpy(output_name(model)).reshape(-1)[0]
        return text.decode() if isinstance(text, bytes) else str(text)
    return [float(x) for x in result.as_numpy(output_name(model)).reshape(-1)]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return -1.0
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else -1.0


def compare(model: Model, cpu: Sequence[Answer], trt: Sequence[Answer]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per request ``{request, cpu, trt, ok[, cosine]}`` and one line per mismatch."""
    items, problems = [], []
    for request, want, got in zip(requests(model), cpu, trt, strict=True):
        item: dict[str, Any] = {"request": request.key, "cpu": want, "trt": got}
        if model.kind == "llm":
            item["ok"] = want == got
            why = f"{request.key!r}: trt {got!r} != cpu {want!r}"
        else:
            item["cosine"] = score = cosine(_floats(want), _floats(got))
            item["ok"] = score >= MIN_COSINE
            why = f"{_short(request.key)}: cosine {score:.6f} < {MIN_COSINE}"
        items.append(item)
        if not item["ok"]:
            problems.append(why)
    return items, problems


def _floats(answer: Answer) -> list[float]:
    return answer if isinstance(answer, list) else []


def _short(key: str) -> str:
    return repr(key[:19] if key.startswith("sha256:") else key)
