"""Triton python model: a CPU stand-in for TensorRT-LLM's ``tensorrtllm`` backend.

It runs the HF checkpoint linked into ``1/hf`` with transformers (a seq2seq or a causal LM, whichever
the checkpoint's config says) and answers with the backend's tensors: ``output_ids [batch, beam, tokens]``,
``sequence_length [batch, beam]``, ``cum_log_probs`` and ``output_log_probs``.

What it reproduces: greedy and beam search, ``request_output_len``, ``end_id`` (the end token is not part
of the output), ``pad_id`` (padding, and the decoder's start token when no ``decoder_input_ids`` come),
``exclude_input_in_output``, bad and stop words, min tokens, length and repetition penalties, log probs,
token counts (``num_input_tokens`` / ``num_output_tokens``) and streaming in decoupled mode.  ``seed``
is accepted and has no effect: nothing is sampled.  Anything it cannot reproduce (sampling, presence/frequency penalties,
diversity rate) is a per-request error: a silently different answer would make CPU tests meaningless.
Requests are independent: a bad one gets its error and the others in the batch are still served.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

OUTPUTS = ("output_ids", "sequence_length", "cum_log_probs", "output_log_probs")
SAMPLING = "the CPU stand-in for tensorrt_llm supports greedy and beam search only"
# Optional scalar inputs and the value an absent one means (end_id, pad_id and exclude_input_in_output
# come from the checkpoint and the model config at load time).
SCALAR_DEFAULTS: dict[str, Any] = {
    "request_output_len": None,
    "beam_width": 1,
    "runtime_top_k": None,
    "runtime_top_p": None,
    "temperature": None,
    "min_tokens": 0,
    "len_penalty": 1.0,
    "early_stopping": False,
    "repetition_penalty": 1.0,
    "return_log_probs": False,
    "return_num_input_tokens": False,
    "return_num_output_tokens": False,
    "streaming": False,
}


Words = tuple[tuple[int, ...], ...]  # token sequences: bad or stop words


class RequestError(Exception):
    """A request the stand-in cannot serve as the GPU backend would; it becomes that request's error."""


class Cancelled(Exception):  # noqa: N818 - not an error: the client went away
    """Raised from the streamer to abandon generate() once the client cancelled the request."""


@dataclass(frozen=True)
class Settings:
    """Everything one generate() call depends on: rows with equal settings are generated together."""

    max_new_tokens: int
    beam_width: int
    end_id: int
    pad_id: int
    decoder_prompt: tuple[int, ...]  # empty for decoder-only models
    min_tokens: int
    length_penalty: float
    early_stopping: bool
    repetition_penalty: float
    bad_words: Words
    stop_words: Words
    return_log_probs: bool


@dataclass(frozen=True)
class Row:
    """One batch row of one request."""

    prompt: tuple[int, ...]
    settings: Settings
    exclude_input: bool
    counts: tuple[bool, bool] = (False, False)  # send num_input_tokens, num_output_tokens


@dataclass
class Beam:
    tokens: list[int]  # what output_ids reports (prompt part included unless excluded)
    log_probs: list[float]  # one per generated token


# ----------------------------------------------------------------------------- reading requests


class Fields:
    """A request's optional per-row inputs, each read as one Python value per batch row."""

    def __init__(self, request: Any, rows: int) -> None:  # noqa: ANN401 - pb_utils objects are untyped
        self.request = request
        self.rows = rows

    def array(self, name: str) -> np.ndarray | None:
        tensor = pb_utils.get_input_tensor_by_name(self.request, name)
        if tensor is None:
            return None
        array = tensor.as_numpy()
        if array.shape[:1] != (self.rows,):
            raise RequestError(f"{name} has batch size {array.shape[:1]}, input_ids has {self.rows}")
        return array

    def scalars(self, name: str, default: Any) -> list[Any]:  # noqa: ANN401 - int, float or bool
        array = self.array(name)
        if array is None:
            return [default] * self.rows
        flat = array.reshape(self.rows, -1)
        if flat.shape[1] != 1:
            raise RequestError(f"{name} must hold one value per batch row, got shape {array.shape}")
        return [row[0].item() for row in flat]


def _word_list(ids: np.ndarray, ends: np.ndarray, name: str) -> Words:
    """TensorRT-LLM's [2, N] layout: ids back to back, then each word's end offset (-1 = padding)."""
    words, start = [], 0
    for end in (int(e) for e in ends):
        if end < 0:
            break
        if not start < end <= len(ids):
            raise RequestError(f"{name}: offsets must increase and stay within the {len(ids)} ids, got {ends.tolist()}")
        words.append(tuple(int(t) for t in ids[start:end]))
        start = end
    return tuple(words)


def _word_lists(fields: Fields, name: str) -> list[Words]:
    array = fields.array(name)
    if array is None:
        return [()] * fields.rows
    if array.ndim != 3 or array.shape[1] != 2:  # noqa: PLR2004 - the [batch, 2, N] layout
        raise RequestError(f"{name} must be [batch, 2, N], got shape {array.shape}")
    return [_word_list(array[row, 0], array[row, 1], name) for row in range(fields.rows)]


def _check_decoding(top_k: int | None, top_p: float | None, temperature: float | None, beam_width: int) -> None:
    """Refuse every request that the GPU backend would answer by sampling."""
    if top_k is not None and top_k < 0:
        raise RequestError(f"runtime_top_k must be >= 0, got {top_k}")
    if top_p is not None and not 0.0 <= top_p <= 1.0:
        raise RequestError(f"runtime_top_p must be in [0, 1], got {top_p}")
    k, p = top_k or 0, top_p or 0.0
    # top_k 1 is greedy whatever top_p says; top_k 0 with top_p 0 means "no sampling" to TensorRT-LLM.
    if k > 1 or (k == 0 and p > 0.0):
        raise RequestError(f"runtime_top_k={top_k}, runtime_top_p={top_p} ask for sampling; {SAMPLING}")
    if temperature is None:
        return
    if temperature < 0.0:
        raise RequestError(f"temperature must be >= 0, got {temperature}")
    # Greedy picks the arg-max, which a temperature does not move; beam scores it would change.
    if beam_width > 1 and temperature != 1.0:
        raise RequestError(f"temperature={temperature} with beam_width {beam_width}: {SAMPLING} at temperature 1")


def _refuse_nonzero(fields: Fields, names: tuple[str, ...]) -> None:
    for name in names:
        values = [v for v in fields.scalars(name, 0.0) if v]
        if values:
            raise RequestError(f"{name}={values[0]} is not supported by the CPU stand-in for tensorrt_llm")


# ----------------------------------------------------------------------------- generation helpers


class StopWords(StoppingCriteria):
    """Ends a row once its generated tokens end with one of the stop words (which stay in the output)."""

    def __init__(self, words: Words, prompt_width: int) -> None:
        self.words = [list(w) for w in words]
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:  # noqa: ANN401, ARG002
        generated = input_ids[:, self.prompt_width :].tolist()
        done = [any(len(row) >= len(w) and row[-len(w) :] == w for w in self.words) for row in generated]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class LogProbRecorder(LogitsProcessor):
    """Keeps the last step's log-probabilities (after every other processor) for streamed log probs."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:  # noqa: ARG002
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores


class TokenSender(BaseStreamer):
    """Sends each generated token as its own response, the last one flagged final.

    One token is held back so that the final response carries data: gRPC clients drop empty final
    responses unless they opt in.  The end token is not sent, as the GPU backend does not output it.
    """

    def __init__(self, send: Callable[..., None], cancelled: Callable[[], bool], row: Row, recorder: LogProbRecorder | None) -> None:
        self.send = send
        self.cancelled = cancelled
        self.end_id = row.settings.end_id
        self.prefix = [] if row.exclude_input else list(row.settings.decoder_prompt or row.prompt)
        self.recorder = recorder
        self.prompt_seen = False
        self.ended = False
        self.pending: tuple[list[int], list[float]] | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the (decoder) prompt
            self.prompt_seen = True
            return
        if self.cancelled():
            raise Cancelled
        token = int(value.reshape(-1)[0])
        if self.ended or token == self.end_id:
            self.ended = True
            return
        log_prob = float(self.recorder.last[0, token]) if self.recorder is not None and self.recorder.last is not None else 0.0
        if self.pending is not None:
            self.send(*self.pending, final=False)
        self.pending = ([*self.prefix, token], [log_prob])
        self.prefix = []

    def end(self) -> None:
        tokens, log_probs = self.pending if self.pending is not None else (self.prefix, [])
        self.send(tokens, log_probs, final=True)


def _generated_length(tokens: list[int], settings: Settings) -> int:
    """Tokens before the end token, or up to and including a stop word; generate() pads after either."""
    length = tokens.index(settings.end_id) if settings.end_id in tokens else len(tokens)
    for end in range(1, length + 1):
        if any(end >= len(w) and tuple(tokens[end - len(w) : end]) == w for w in settings.stop_words):
            return end
    return length


# ----------------------------------------------------------------------------- responses


def _counts(beams: list[list[Beam]], rows: list[Row]) -> list[Any]:
    """num_input_tokens / num_output_tokens when asked for, counted as the GPU backend counts them.

    That is the prompt tokens, and every token of every beam that output_ids holds (the prompt too, unless excluded).
    """
    report_input, report_output = rows[0].counts
    tensors = []
    if report_input:
        tensors.append(pb_utils.Tensor("num_input_tokens", np.array([[len(row.prompt)] for row in rows], dtype=np.int32)))
    if report_output:
        totals = [[sum(len(beam.tokens) for beam in row)] for row in beams]
        tensors.append(pb_utils.Tensor("num_output_tokens", np.array(totals, dtype=np.int32)))
    return tensors


def _response(beams: list[list[Beam]], requested: list[Row]) -> Any:  # noqa: ANN401 - a pb_utils.InferenceResponse
    """Pack rows of beams into the backend's output tensors, padding with each row's pad id."""
    pad_ids = [row.settings.pad_id for row in requested]
    rows, width = len(beams), len(beams[0])
    longest = max((len(b.tokens) for row in beams for b in row), default=0)
    generated = max((len(b.log_probs) for row in beams for b in row), default=0)
    output_ids = np.empty((rows, width, longest), dtype=np.int32)
    lengths = np.zeros((rows, width), dtype=np.int32)
    cum = np.zeros((rows, width), dtype=np.float32)
    log_probs = np.zeros((rows, width, generated), dtype=np.float32)
    for r, row in enumerate(beams):
        output_ids[r] = pad_ids[r]
        for k, beam in enumerate(row):
            output_ids[r, k, : len(beam.tokens)] = beam.tokens
            lengths[r, k] = len(beam.tokens)
            log_probs[r, k, : len(beam.log_probs)] = beam.log_probs
            cum[r, k] = sum(beam.log_probs)
    arrays = (output_ids, lengths, cum, log_probs)
    tensors = [pb_utils.Tensor(n, a) for n, a in zip(OUTPUTS, arrays, strict=True)]
    return pb_utils.InferenceResponse(output_tensors=tensors + _counts(beams, requested))


def _error(message: str) -> Any:  # noqa: ANN401 - a pb_utils.InferenceResponse
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_beam_width = int(params.get("max_beam_width", "1"))
        self.max_input_len = int(params["max_input_len"])
        self.max_output_len = int(params["max_output_len"])
        self.exclude_default = params.get("exclude_input_in_output", "true").lower() == "true"
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        folder = Path(args["model_repository"]) / args["model_version"] / "hf"
        hf_config = AutoConfig.from_pretrained(folder)
        self.encoder_decoder = bool(getattr(hf_config, "is_encoder_decoder", False))
        auto = AutoModelForSeq2SeqLM if self.encoder_decoder else AutoModelForCausalLM
        # float32 whatever the checkpoint stores: half precision on CPU is slow and not what tests compare.
        self.model = auto.from_pretrained(folder).float().eval()
        # The checkpoint's generation_config.json (sampling, no_repeat_ngram_size, ...) is not what the
        # GPU backend applies: every generate() call spells out its settings from the request instead.
        self.model.generation_config = GenerationConfig()
        self.vocab_size = int(self.model.get_input_embeddings().num_embeddings)
        self.default_end_id = hf_config.eos_token_id if isinstance(hf_config.eos_token_id, int) else None
        pad = hf_config.pad_token_id
        self.default_pad_id = pad if isinstance(pad, int) else self.default_end_id

    # -- requests -> rows

    def _token_id(self, value: int | None, name: str) -> int:
        if value is None:
            raise RequestError(f"{name} is required: the checkpoint's config defines none")
        if not 0 <= value < self.vocab_size:
            raise RequestError(f"{name} {value} is outside the vocabulary (0..{self.vocab_size - 1})")
        return int(value)

    def _prompts(self, fields: Fields, ids: np.ndarray) -> list[tuple[int, ...]]:
        prompts = []
        for row, length in zip(ids, fields.scalars("input_lengths", ids.shape[1]), strict=True):
            if not 1 <= length <= ids.shape[1]:
                raise RequestError(f"input_lengths {length} must be between 1 and the {ids.shape[1]} input_ids sent")
            if length > self.max_input_len:
                raise RequestError(f"input length {length} exceeds the engine's max_input_len {self.max_input_len}")
            prompt = tuple(int(t) for t in row[:length])
            if min(prompt) < 0 or max(prompt) >= self.vocab_size:
                raise RequestError(f"input_ids must be token ids in 0..{self.vocab_size - 1}")
            prompts.append(prompt)
        return prompts

    def _decoder_prompts(self, fields: Fields, pad_ids: list[int]) -> list[tuple[int, ...]]:
        array = fields.array("decoder_input_ids")
        if not self.encoder_decoder:
            if array is not None:
                raise RequestError("decoder_input_ids are for encoder-decoder models; this checkpoint is decoder-only")
            return [()] * fields.rows
        if array is None:
            return [(self._token_id(pad, "pad_id"),) for pad in pad_ids]
        array = array.reshape(fields.rows, -1)
        lengths = fields.scalars("decoder_input_lengths", array.shape[1])
        prompts = [tuple(int(t) for t in row[:n]) for row, n in zip(array, lengths, strict=True)]
        # An empty decoder prompt means the default one, the pad id.
        return [p or (self._token_id(pad, "pad_id"),) for p, pad in zip(prompts, pad_ids, strict=True)]

    def _settings(self, values: dict[str, Any], decoder: tuple[int, ...], words: tuple[Words, Words]) -> Settings:
        """One row's settings from its scalar inputs; RequestError where the GPU backend would answer differently."""
        out_len, beams = values["request_output_len"], values["beam_width"]
        if not 1 <= out_len <= self.max_output_len:
            raise RequestError(f"request_output_len {out_len} must be between 1 and the engine's max_output_len {self.max_output_len}")
        if not 1 <= beams <= self.max_beam_width:
            raise RequestError(f"beam_width {beams} must be between 1 and the engine's max_beam_width {self.max_beam_width}")
        _check_decoding(values["runtime_top_k"], values["runtime_top_p"], values["temperature"], beams)
        bad, stop = words
        if stop and beams > 1:
            raise RequestError("stop words with beam search are not supported by the CPU stand-in for tensorrt_llm")
        if values["repetition_penalty"] <= 0.0:
            raise RequestError(f"repetition_penalty must be > 0, got {values['repetition_penalty']}")
        return Settings(
            max_new_tokens=out_len,
            beam_width=beams,
            end_id=self._token_id(values["end_id"], "end_id"),
            pad_id=self._token_id(values["pad_id"], "pad_id"),
            decoder_prompt=decoder,
            min_tokens=max(0, values["min_tokens"]),
            length_penalty=values["len_penalty"],
            early_stopping=bool(values["early_stopping"]),
            repetition_penalty=values["repetition_penalty"],
            bad_words=bad,
            stop_words=stop,
            return_log_probs=bool(values["return_log_probs"]),
        )

    def _rows(self, request: Any) -> tuple[list[Row], bool]:  # noqa: ANN401
        """The request's rows and whether it asks for streaming."""
        tensor = pb_utils.get_input_tensor_by_name(request, "input_ids")
        if tensor is None:
            raise RequestError("input_ids is required")
        ids = tensor.as_numpy()
        ids = ids.reshape(ids.shape[0], -1)
        fields = Fields(request, ids.shape[0])
        _refuse_nonzero(fields, ("presence_penalty", "frequency_penalty", "beam_search_diversity_rate"))
        defaults = {**SCALAR_DEFAULTS, "end_id": self.default_end_id, "pad_id": self.default_pad_id}
        defaults["exclude_input_in_output"] = self.exclude_default
        columns = {name: fields.scalars(name, default) for name, default in defaults.items()}
        if columns["request_output_len"][0] is None:
            raise RequestError("request_output_len is required")
        streaming = any(columns["streaming"])
        if streaming and not self.decoupled:
            raise RequestError("streaming needs the decoupled transaction policy (triton.decoupled: true)")
        words = zip(_word_lists(fields, "bad_words_list"), _word_lists(fields, "stop_words_list"), strict=True)
        decoders = self._decoder_prompts(fields, columns["pad_id"])
        # One answer per request: its counts are sent for every row when any row asks.
        counts = (any(columns["return_num_input_tokens"]), any(columns["return_num_output_tokens"]))
        rows = []
        for r, (prompt, decoder, row_words) in enumerate(zip(self._prompts(fields, ids), decoders, words, strict=True)):
            values = {name: column[r] for name, column in columns.items()}
            rows.append(Row(prompt, self._settings(values, decoder, row_words), bool(values["exclude_input_in_output"]), counts))
        if streaming and (len(rows) != 1 or rows[0].settings.beam_width != 1):
            raise RequestError("streaming on the CPU stand-in takes one sequence per request and beam_width 1")
        return rows, streaming

    # -- generation

    def _generate(self, settings: Settings, prompts: list[tuple[int, ...]], **extra: Any) -> Any:  # noqa: ANN401
        """One transformers generate() call for prompts sharing ``settings``; returns (output, prompt width)."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), settings.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            # Causal LMs continue from the last prompt token, so their padding goes on the left.
            span = slice(0, len(prompt)) if self.encoder_decoder else slice(width - len(prompt), width)
            ids[row, span] = torch.tensor(prompt)
            mask[row, span] = 1
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        prompt_width = width
        if self.encoder_decoder:
            inputs["decoder_input_ids"] = torch.tensor([settings.decoder_prompt] * len(prompts), dtype=torch.long)
            prompt_width = len(settings.decoder_prompt)
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_tokens or None,
            do_sample=False,
            num_beams=settings.beam_width,
            num_return_sequences=settings.beam_width,
            length_penalty=settings.length_penalty,
            early_stopping=settings.early_stopping,
            repetition_penalty=settings.repetition_penalty,
            bad_words_ids=[list(w) for w in settings.bad_words] or None,
            eos_token_id=settings.end_id,
            pad_token_id=settings.pad_id,
            # The decoder prompt already starts with it; naming it keeps generate() from prepending another.
            decoder_start_token_id=settings.decoder_prompt[0] if self.encoder_decoder else None,
            return_dict_in_generate=True,
            output_scores=settings.return_log_probs,
        )
        stopping = StoppingCriteriaList([StopWords(settings.stop_words, prompt_width)] if settings.stop_words else [])
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=config, stopping_criteria=stopping, **extra)
        return out, prompt_width

    def _beams(self, settings: Settings, rows: list[Row]) -> list[list[Beam]]:
        out, prompt_width = self._generate(settings, [row.prompt for row in rows])
        generated = out.sequences[:, prompt_width:].tolist()
        scores = None
        if settings.return_log_probs:
            # Beam search already scores with log-softmax; greedy scores are logits to normalise.
            beam_indices = out.beam_indices if settings.beam_width > 1 else None
            scores = self.model.compute_transition_scores(
                out.sequences, out.scores, beam_indices, normalize_logits=settings.beam_width == 1
            )
        result = []
        for r, row in enumerate(rows):
            prefix = [] if row.exclude_input else list(settings.decoder_prompt or row.prompt)
            beams = []
            for k in range(settings.beam_width):
                i = r * settings.beam_width + k
                n = _generated_length(generated[i], settings)
                log_probs = [float(v) for v in scores[i, :n]] if scores is not None else [0.0] * n
                beams.append(Beam(prefix + generated[i][:n], log_probs))
            result.append(beams)
        return result

    def _stream(self, request: Any, row: Row) -> None:  # noqa: ANN401
        sender = request.get_response_sender()

        def send(tokens: list[int], log_probs: list[float], *, final: bool) -> None:
            response = _response([[Beam(tokens, log_probs)]], [row])
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0)

        recorder = LogProbRecorder() if row.settings.return_log_probs else None
        streamer = TokenSender(send, request.is_cancelled, row, recorder)
        processors = LogitsProcessorList([recorder] if recorder is not None else [])
        self._generate(row.settings, [row.prompt], streamer=streamer, logits_processor=processors)

    # -- Triton entry point

    def execute(self, requests: list[Any]) -> list[Any] | None:
        results: list[Any] = [None] * len(requests)
        parsed: dict[int, list[Row]] = {}
        streamed: list[tuple[int, Row]] = []
        for i, request in enumerate(requests):
            try:
                rows, streaming = self._rows(request)
            except RequestError as exc:
                results[i] = _error(str(exc))
                continue
            if streaming:
                streamed.append((i, rows[0]))
            else:
                parsed[i] = rows
        self._run_batches(parsed, results)
        if not self.decoupled:
            return results
        for i, row in streamed:
            self._run_stream(requests[i], row)
        for request, result in zip(requests, results, strict=True):
            if result is not None:
                request.get_response_sender().send(result, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def _run_batches(self, parsed: dict[int, list[Row]], results: list[Any]) -> None:
        """Generate every row, one generate() call per distinct settings, and fill in each request's response."""
        groups: dict[Settings, list[tuple[int, int, Row]]] = {}
        for i, rows in parsed.items():
            for r, row in enumerate(rows):
                groups.setdefault(row.settings, []).append((i, r, row))
        beams: dict[tuple[int, int], list[Beam]] = {}
        for settings, members in groups.items():
            try:
                generated = self._beams(settings, [row for _, _, row in members])
            except Exception as exc:  # noqa: BLE001 - one failing generate() must not take the server or other requests down
                pb_utils.Logger.log_error(f"tensorrt_llm (cpu): generate failed\n{traceback.format_exc()}")
                for i, _, _ in members:
                    results[i] = _error(f"generation failed: {exc}")
                continue
            for (i, r, _), row_beams in zip(members, generated, strict=True):
                beams[i, r] = row_beams
        for i, rows in parsed.items():
            if results[i] is None:
                results[i] = _response([beams[i, r] for r in range(len(rows))], rows)

    def _run_stream(self, request: Any, row: Row) -> None:  # noqa: ANN401
        try:
            self._stream(request, row)
        except Cancelled:
            # Nobody reads the answer any more; the final flag alone releases the request.
            request.get_response_sender().send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # noqa: BLE001 - as in _run_batches; the stream ends with the error
            pb_utils.Logger.log_error(f"tensorrt_llm (cpu): streamed generate failed\n{traceback.format_exc()}")
            request.get_response_sender().send(_error(f"generation failed: {exc}"), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
