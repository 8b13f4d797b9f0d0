"""Triton python (BLS) model: a query -> the top-k items of the index built by the ``index`` stage.

The query goes through the member ensemble named in the config (``member_model``), the
same one that embedded the corpus; its L2-normalised embedding is scored against every
corpus row (``embeddings.npy``, normalised at build time), so scores are cosine
similarities.  Outputs per query row: ``matches`` (the corpus lines), ``scores``, ``ids``
(row numbers in the corpus), best first.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best scores of each row, best first (ties: lower index first)."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    best = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -best), axis=1)
    return np.take_along_axis(part, order, axis=1)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = config["parameters"]
        self.member = parameters["member_model"]["string_value"]
        self.default_k = int(parameters["top_k"]["string_value"])
        self.query = next(i["name"] for i in config["input"] if i["name"] != "top_k")
        folder = Path(args["model_repository"]) / args["model_version"]
        self.vectors = np.load(folder / "embeddings.npy")
        self.items = np.array([s.encode("utf-8") for s in json.loads((folder / "items.json").read_text(encoding="utf-8"))], dtype=object)

    def _k(self, request: Any) -> int:  # noqa: ANN401 - pb_utils objects are untyped
        given = pb_utils.get_input_tensor_by_name(request, "top_k")
        return self.default_k if given is None else int(given.as_numpy().reshape(-1)[0])

    async def _one(self, request: Any) -> Any:  # noqa: ANN401
        k = self._k(request)
        if not 1 <= k <= len(self.items):
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"top_k: expected 1..{len(self.items)} (the corpus size), got {k}")
            )
        query = pb_utils.get_input_tensor_by_name(request, self.query).as_numpy()
        member = pb_utils.InferenceRequest(
            model_name=self.member, inputs=[pb_utils.Tensor(self.query, query)], requested_output_names=["embedding"]
        )
        response = await member.async_exec()
        if response.has_error():
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.member}: {response.error().message()}"))
        embedding = pb_utils.get_output_tensor_by_name(response, "embedding").as_numpy().astype(np.float32)
        embedding /= np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
        scores = embedding @ self.vectors.T
        ids = top_k(scores, k)
        tensors = [
            pb_utils.Tensor("matches", self.items[ids]),
            pb_utils.Tensor("scores", np.take_along_axis(scores, ids, axis=1).astype(np.float32)),
            pb_utils.Tensor("ids", ids.astype(np.int32)),
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    async def execute(self, requests: list[Any]) -> list[Any]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))
