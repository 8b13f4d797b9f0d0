"""Triton python model: prompts -> the token ids and per-request settings that tensorrt_llm reads.

Each request is handled on its own; one with text that is not UTF-8, or without an end id where the
tokenizer has none, gets its own error response while the rest are served.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from transformers import AutoTokenizer


class RequestError(Exception):
    """A problem with one request; it becomes that request's error response."""


def _tensor(request: Any, name: str) -> np.ndarray | None:  # noqa: ANN401 - pb_utils objects are untyped
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _strings(request: Any, name: str) -> list[list[str]] | None:  # noqa: ANN401
    """A STRING input as one list of strings per batch row (None when the request lacks it)."""
    array = _tensor(request, name)
    if array is None:
        return None
    rows = array.reshape(array.shape[0], -1)
    try:
        return [[v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in row] for row in rows]
    except UnicodeDecodeError as exc:
        raise RequestError(f"{name} is not valid UTF-8: {exc}") from None


def _id_column(request: Any, name: str, rows: int, default: int | None) -> np.ndarray:  # noqa: ANN401
    array = _tensor(request, name)
    if array is not None:
        return array.astype(np.int32).reshape(rows, 1)
    if default is None:
        raise RequestError(f"the tokenizer defines no {name.lower()}; send {name}")
    return np.full((rows, 1), default, dtype=np.int32)


def _padded(sequences: list[list[int]], value: int) -> np.ndarray:
    out = np.full((len(sequences), max((len(s) for s in sequences), default=0)), value, dtype=np.int32)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = seq
    return out


def word_lists(rows: list[list[list[int]]]) -> np.ndarray:
    """TensorRT-LLM's word-list layout, ``[rows, 2, N]``.

    Row 0 holds a batch row's words' token ids back to back, row 1 the offset where each word ends;
    offsets are padded with -1 (ids with 0).  A row without words is all padding, and N is at least 1
    because the backend reads the offsets row to find the words.
    """
    width = max([1] + [sum(len(w) for w in words) for words in rows])
    out = np.zeros((len(rows), 2, width), dtype=np.int32)
    out[:, 1, :] = -1
    for row, words in enumerate(rows):
        ids = [token for word in words for token in word]
        ends = list(itertools.accumulate(len(word) for word in words))
        out[row, 0, : len(ids)] = ids
        out[row, 1, : len(ends)] = ends
    return out


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.add_special_tokens = params.get("add_special_tokens", "true").lower() == "true"
        folder = Path(args["model_repository"]) / args["model_version"] / "tokenizer"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.end_id: int | None = self.tokenizer.eos_token_id
        # Checkpoints without a pad token (GPT-2) pad with the end token, as TensorRT-LLM's examples do.
        pad = self.tokenizer.pad_token_id
        self.pad_id: int | None = pad if pad is not None else self.end_id

    def _encode(self, texts: list[str], *, special: bool) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=special)["input_ids"]]

    def _words(self, request: Any, name: str, rows: int) -> np.ndarray:  # noqa: ANN401
        # Words are encoded without special tokens: they are matched against generated text, not prompts.
        per_row = _strings(request, name) or [[] for _ in range(rows)]
        return word_lists([[ids for ids in self._encode(words, special=False) if ids] if words else [] for words in per_row])

    def _decoder_prompts(self, request: Any, pad_ids: np.ndarray) -> list[list[int]]:  # noqa: ANN401
        # An encoder-decoder's decoder starts from the pad id (TensorRT-LLM's default decoder input);
        # an optional DECODER_QUERY continues from there.
        queries = _strings(request, "DECODER_QUERY")
        starts = [[int(pad)] for pad in pad_ids[:, 0]]
        if queries is None:
            return starts
        texts = [row[0] if row else "" for row in queries]
        return [start + ids for start, ids in zip(starts, self._encode(texts, special=False), strict=True)]

    def _preprocess(self, request: Any) -> Any:  # noqa: ANN401
        queries = _strings(request, "QUERY")
        if queries is None:
            raise RequestError("QUERY is required")
        rows = len(queries)
        input_ids = self._encode([row[0] if row else "" for row in queries], special=self.add_special_tokens)
        end_ids = _id_column(request, "END_ID", rows, self.end_id)
        pad_ids = _id_column(request, "PAD_ID", rows, self.pad_id)
        decoder_ids = self._decoder_prompts(request, pad_ids)
        output_len = _tensor(request, "REQUEST_OUTPUT_LEN")
        if output_len is None:
            raise RequestError("REQUEST_OUTPUT_LEN is required")
        tensors = {
            "INPUT_ID": _padded(input_ids, int(pad_ids[0, 0])),
            "REQUEST_INPUT_LEN": np.array([[len(ids)] for ids in input_ids], dtype=np.int32),
            "DECODER_INPUT_ID": _padded(decoder_ids, int(pad_ids[0, 0])),
            "REQUEST_DECODER_INPUT_LEN": np.array([[len(ids)] for ids in decoder_ids], dtype=np.int32),
            "REQUEST_OUTPUT_LEN": output_len.astype(np.int32).reshape(rows, 1),
            "BAD_WORDS_IDS": self._words(request, "BAD_WORDS_DICT", rows),
            "STOP_WORDS_IDS": self._words(request, "STOP_WORDS_DICT", rows),
            "OUT_END_ID": end_ids,
            "OUT_PAD_ID": pad_ids,
        }
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in tensors.items()])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._preprocess(request))
            except RequestError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
