"""Triton python model: the encoder's ONNX graph run by onnxruntime (CPU stand-in for the plan).

A dynamic batch of requests is padded to one width and run as a single
onnxruntime call; padding carries attention_mask 0, so pooled embeddings are
unaffected, and each request gets its own rows and sequence length back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("last_hidden_state", "sentence_embedding")


def _pad(array: np.ndarray, width: int) -> np.ndarray:
    return np.pad(array, ((0, 0), (0, width - array.shape[1])))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        # The engine stage already optimised the graph offline; doing it again only costs load time.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in INPUTS} for r in requests]
        width = max(f["input_ids"].shape[1] for f in feeds)
        batch = {n: np.concatenate([_pad(f[n], width) for f in feeds]) for n in INPUTS}
        hidden, pooled = self.session.run(list(OUTPUTS), batch)
        responses, start = [], 0
        for feed in feeds:
            rows, seq = feed["input_ids"].shape
            tensors = [
                pb_utils.Tensor("last_hidden_state", np.ascontiguousarray(hidden[start : start + rows, :seq])),
                pb_utils.Tensor("sentence_embedding", np.ascontiguousarray(pooled[start : start + rows])),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += rows
        return responses
