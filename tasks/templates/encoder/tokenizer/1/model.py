"""Triton python model: UTF-8 text -> INT32 token ids for the encoder.

Each request is tokenized on its own and padded to its longest text; sequences are
truncated to the engine's ``max_seq_len`` so the encoder never sees a shape its
TensorRT profile lacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from tokenizers import Tokenizer


def _pad_token(folder: Path, tokenizer: Tokenizer) -> tuple[int, str]:
    """The checkpoint's pad token (tokenizer_config.json), else id 0."""
    config_path = folder / "tokenizer_config.json"
    name = None
    if config_path.is_file():
        value = json.loads(config_path.read_text(encoding="utf-8")).get("pad_token")
        name = value.get("content") if isinstance(value, dict) else value
    token_id = tokenizer.token_to_id(name) if isinstance(name, str) else None
    if token_id is None:
        return 0, tokenizer.id_to_token(0) or "[PAD]"
    return token_id, str(name)


# Each output tensor from one encoding; only the outputs the config lists are built.
_FIELDS = {
    "input_ids": lambda e: e.ids,
    "attention_mask": lambda e: e.attention_mask,
    "token_type_ids": lambda e: e.type_ids,
}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        # BERT takes token_type_ids, CLIP's text tower does not: emit what this config lists.
        self.outputs = [output["name"] for output in config["output"]]
        max_len = int(config["parameters"]["max_seq_len"]["string_value"])
        folder = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_len)
        pad_id, pad_token = _pad_token(folder, self.tokenizer)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)

    def _encode(self, request: Any) -> Any:  # noqa: ANN401 - pb_utils objects are untyped
        raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
        try:
            texts = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw]
        except UnicodeDecodeError as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"text is not valid UTF-8: {exc}"))
        encodings = self.tokenizer.encode_batch(texts)
        tensors = [pb_utils.Tensor(name, np.array([_FIELDS[name](e) for e in encodings], dtype=np.int32)) for name in self.outputs]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._encode(request) for request in requests]
