"""Triton python model (BLS): the ensemble's text-in/text-out contract, calling the three models from python.

Unlike the ensemble, a streamed answer is detokenized over all tokens so far and each response carries
only the text they add, so the streamed pieces concatenate to exactly the non-streamed text (decoding
each chunk of tokens on its own loses the spaces that sentencepiece-style tokenizers attach to a token).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

# User-facing input -> the preprocessing input it feeds.
PREPROCESSING_INPUTS = {
    "text_input": "QUERY",
    "decoder_text_input": "DECODER_QUERY",
    "max_tokens": "REQUEST_OUTPUT_LEN",
    "bad_words": "BAD_WORDS_DICT",
    "stop_words": "STOP_WORDS_DICT",
    "end_id": "END_ID",
    "pad_id": "PAD_ID",
}
# Preprocessing output -> tensorrt_llm input.
PREPROCESSING_OUTPUTS = {
    "INPUT_ID": "input_ids",
    "REQUEST_INPUT_LEN": "input_lengths",
    "DECODER_INPUT_ID": "decoder_input_ids",
    "REQUEST_DECODER_INPUT_LEN": "decoder_input_lengths",
    "REQUEST_OUTPUT_LEN": "request_output_len",
    "BAD_WORDS_IDS": "bad_words_list",
    "STOP_WORDS_IDS": "stop_words_list",
    "OUT_END_ID": "end_id",
    "OUT_PAD_ID": "pad_id",
}
# User-facing input -> tensorrt_llm input (the renames are the ensemble's).
GENERATION_INPUTS = {
    "beam_width": "beam_width",
    "top_k": "runtime_top_k",
    "top_p": "runtime_top_p",
    "temperature": "temperature",
    "length_penalty": "len_penalty",
    "repetition_penalty": "repetition_penalty",
    "min_tokens": "min_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "return_log_probs": "return_log_probs",
    "return_num_input_tokens": "return_num_input_tokens",
    "return_num_output_tokens": "return_num_output_tokens",
    "exclude_input_in_output": "exclude_input_in_output",
    "stream": "streaming",
}
TRTLLM_OUTPUTS = ("output_ids", "sequence_length", "cum_log_probs", "output_log_probs", "num_input_tokens", "num_output_tokens")
# tensorrt_llm outputs passed on as they are (the counts only when the request asked for them).
PASSED_ON = ("cum_log_probs", "output_log_probs", "num_input_tokens", "num_output_tokens")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class RequestError(Exception):
    """A request that failed in one of the called models; it becomes this request's error."""


def _renamed(request: Any, names: dict[str, str]) -> list[Any]:  # noqa: ANN401 - pb_utils objects are untyped
    tensors = []
    for name, target in names.items():
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            tensors.append(pb_utils.Tensor(target, tensor.as_numpy()))
    return tensors


def _outputs(model: str, response: Any, names: tuple[str, ...]) -> dict[str, np.ndarray]:  # noqa: ANN401
    if response.has_error():
        raise RequestError(f"{model}: {response.error().message()}")
    found = {name: pb_utils.get_output_tensor_by_name(response, name) for name in names}
    return {name: tensor.as_numpy() for name, tensor in found.items() if tensor is not None}


def _text(array: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


def _reply(text: np.ndarray, generated: dict[str, np.ndarray]) -> Any:  # noqa: ANN401
    tensors = [pb_utils.Tensor("text_output", text)]
    tensors += [pb_utils.Tensor(name, generated[name]) for name in PASSED_ON if name in generated]
    return pb_utils.InferenceResponse(output_tensors=tensors)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        parameter = config.get("parameters", {}).get("encoder_decoder", {}).get("string_value", "true")
        decoder_inputs = ("DECODER_INPUT_ID", "REQUEST_DECODER_INPUT_LEN")
        self.passed_on = {k: v for k, v in PREPROCESSING_OUTPUTS.items() if parameter == "true" or k not in decoder_inputs}

    # -- calls into the other models

    def _preprocess(self, request: Any) -> list[Any]:  # noqa: ANN401
        call = pb_utils.InferenceRequest(
            model_name="preprocessing", requested_output_names=list(PREPROCESSING_OUTPUTS), inputs=_renamed(request, PREPROCESSING_INPUTS)
        )
        arrays = _outputs("preprocessing", call.exec(), tuple(self.passed_on))
        return [pb_utils.Tensor(self.passed_on[name], array) for name, array in arrays.items()]

    def _generate(self, inputs: list[Any]) -> Iterator[dict[str, np.ndarray]]:
        call = pb_utils.InferenceRequest(model_name="tensorrt_llm", requested_output_names=list(TRTLLM_OUTPUTS), inputs=inputs)
        if not self.decoupled:
            yield _outputs("tensorrt_llm", call.exec(), TRTLLM_OUTPUTS)
            return
        for response in call.exec(decoupled=True):
            arrays = _outputs("tensorrt_llm", response, TRTLLM_OUTPUTS)
            if "output_ids" in arrays:  # a decoupled model may close the stream with an empty response
                yield arrays

    def _postprocess(self, output_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        inputs = [
            pb_utils.Tensor("TOKENS_BATCH", output_ids.astype(np.int32)),
            pb_utils.Tensor("SEQUENCE_LENGTH", lengths.astype(np.int32)),
        ]
        call = pb_utils.InferenceRequest(model_name="postprocessing", requested_output_names=["OUTPUT"], inputs=inputs)
        return _outputs("postprocessing", call.exec(), ("OUTPUT",))["OUTPUT"]

    # -- one request

    def _tensorrt_llm_inputs(self, request: Any) -> list[Any]:  # noqa: ANN401
        return self._preprocess(request) + _renamed(request, GENERATION_INPUTS)

    def _answer(self, request: Any) -> Any:  # noqa: ANN401
        """The whole answer at once (the last response of tensorrt_llm holds all tokens when not streaming)."""
        answers = list(self._generate(self._tensorrt_llm_inputs(request)))
        if not answers:
            raise RequestError("tensorrt_llm returned no tokens")
        generated = answers[-1]
        return _reply(self._postprocess(generated["output_ids"], generated["sequence_length"]), generated)

    def _stream(self, request: Any, sender: Any) -> None:  # noqa: ANN401
        """Send the text each tensorrt_llm response adds; the last response is flagged final."""
        tokens: list[int] = []
        sent = ""
        pending = None
        for generated in self._generate(self._tensorrt_llm_inputs(request)):
            ids, lengths = generated["output_ids"], generated["sequence_length"]
            if ids.shape[0] != 1 or ids.shape[1] != 1:
                raise RequestError("streaming takes one sequence and beam_width 1")
            tokens += ids[0, 0, : int(lengths.reshape(-1)[0])].tolist()
            text = _text(self._postprocess(np.array([[tokens]]), np.array([[len(tokens)]])))[0]
            # A multi-byte character split across tokens decodes to U+FFFD until its last byte arrives.
            if text.endswith("\ufffd"):
                text = sent
            delta = text[len(sent) :] if text.startswith(sent) else text[len(_common_prefix(text, sent)) :]
            sent = text
            if pending is not None:
                sender.send(pending)
            pending = _reply(np.array([[delta.encode("utf-8")]], dtype=np.object_), generated)
        sender.send(pending if pending is not None else _reply(np.array([[b""]], dtype=np.object_), {}), flags=FINAL)

    def _serve(self, request: Any) -> Any:  # noqa: ANN401
        """The response of a non-streamed request, or None when it was streamed through the sender."""
        stream = pb_utils.get_input_tensor_by_name(request, "stream")
        if stream is None or not stream.as_numpy().any():
            return self._answer(request)
        if not self.decoupled:
            raise RequestError("streaming needs the decoupled transaction policy (triton.decoupled: true)")
        self._stream(request, request.get_response_sender())
        return None

    def execute(self, requests: list[Any]) -> list[Any] | None:
        responses = []
        for request in requests:
            try:
                response = self._serve(request)
            except RequestError as exc:
                response = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
            except Exception as exc:  # noqa: BLE001 - one failing request must not take the others down
                pb_utils.Logger.log_error(f"tensorrt_llm_bls: {traceback.format_exc()}")
                response = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tensorrt_llm_bls failed: {exc}"))
            if self.decoupled and response is not None:
                request.get_response_sender().send(response, flags=FINAL)
            responses.append(response)
        return None if self.decoupled else responses


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
