"""Triton python model: the encoder's ONNX graph run by onnxruntime (CPU stand-in for the plan).

Tensor names and shapes come from this model's config, so one file serves every encoder
family.  A dynamic batch of requests is run as a single onnxruntime call: inputs with a
dynamic sequence are right-padded to the widest request (padding carries attention_mask 0,
so pooled embeddings are unaffected), and each request gets its own rows back, with
sequence outputs cut to its own width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


def _pad(array: np.ndarray, width: int) -> np.ndarray:
    return np.pad(array, [(0, 0), (0, width - array.shape[1])] + [(0, 0)] * (array.ndim - 2))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.dynamic = {i["name"] for i in config["input"] if int(i["dims"][0]) == -1}
        self.outputs = [(o["name"], int(o["dims"][0]) == -1) for o in config["output"]]
        folder = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        # The engine stage already optimised the graph offline; doing it again only costs load time.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def _batch(self, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        batch = {}
        for name in self.inputs:
            parts = [f[name] for f in feeds]
            if name in self.dynamic:
                width = max(p.shape[1] for p in parts)
                parts = [_pad(p, width) for p in parts]
            batch[name] = np.concatenate(parts)
        return batch

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        results = self.session.run([name for name, _ in self.outputs], self._batch(feeds))
        responses, start = [], 0
        for feed in feeds:
            first = feed[self.inputs[0]]
            rows, width = first.shape[0], first.shape[1] if first.ndim > 1 else 0
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + rows, :width] if sequence else out[start : start + rows]))
                for (name, sequence), out in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += rows
        return responses
