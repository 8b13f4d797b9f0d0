"""Triton python model: tensorrt_llm's ``[batch, beam, tokens]`` ids -> one string per beam.

Only the first ``SEQUENCE_LENGTH`` tokens of a beam are text; the rest is padding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from transformers import AutoTokenizer


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.skip_special_tokens = params.get("skip_special_tokens", "true").lower() == "true"
        folder = Path(args["model_repository"]) / args["model_version"] / "tokenizer"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def _decode(self, request: Any) -> Any:  # noqa: ANN401 - pb_utils objects are untyped
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
        lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
        batch, beams = tokens.shape[0], tokens.shape[1]
        lengths = lengths.reshape(batch, beams)
        texts = [
            [
                self.tokenizer.decode(tokens[b, k, : int(lengths[b, k])].tolist(), skip_special_tokens=self.skip_special_tokens)
                for k in range(beams)
            ]
            for b in range(batch)
        ]
        output = np.array([[t.encode("utf-8") for t in row] for row in texts], dtype=np.object_).reshape(batch, beams)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", output)])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._decode(request))
            except (ValueError, IndexError, OverflowError) as exc:
                # Token ids the tokenizer cannot map fail this request only.
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"cannot decode: {exc}")))
        return responses
