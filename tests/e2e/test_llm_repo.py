"""The CPU stand-in for ``tensorrt_llm`` in the LLM repository, served by the real Triton and compared with
transformers: ensemble and BLS, beams, stop words, unsupported requests, and streaming.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tasks.commands.conformance.fixtures import build_tiny_t5
from tasks.triton.launcher import TritonServer
from tests.support.llm_repo import MAX_TOKENS, TRITON, Reference, assemble

PROMPTS = ["a man is eating food", "summarize: triton serves models", "two men pushed carts through the woods"]


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def v1_0(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return Reference(build_tiny_t5(tmp_path_factory.mktemp("t5") / "v1_0", variant="v1_0"))


@pytest.fixture(scope="module")
def flan_server(flan: Reference, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("flan-repo")
    with TritonServer(assemble(flan.folder, root, "cpu", TRITON), "cpu", root / "triton.log") as server:
        yield server


@pytest.fixture(scope="module")
def streaming_server(v1_0: Reference, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("v1_0-repo")
    triton = {**TRITON, "decoupled": True, "max_queue_delay_us": 0}
    with TritonServer(assemble(v1_0.folder, root, "cpu", triton), "cpu", root / "triton.log") as server:
        yield server


@pytest.fixture
def client(flan_server: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(flan_server.grpc_url)
    yield client
    client.close()


# ------------------------------------------------------------------------------------- requests


def tensor(name: str, value: Any, dtype: Any = np.int32) -> grpcclient.InferInput:
    """A one-row input from a string, a scalar, a list of token ids, or an already batched nested list."""
    if isinstance(value, str):
        array = np.array([[value.encode()]], dtype=np.object_)
    elif isinstance(value, list):
        array = np.array(value if isinstance(value[0], list) else [value], dtype=dtype)
    else:
        array = np.array([[value]], dtype=dtype)
    inp = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    inp.set_data_from_numpy(array)
    return inp


def text_inputs(prompt: str, **extra: tuple[Any, Any]) -> list[grpcclient.InferInput]:
    return [tensor("text_input", prompt), tensor("max_tokens", MAX_TOKENS)] + [tensor(n, v, t) for n, (v, t) in extra.items()]


def token_inputs(ids: list[int], **extra: tuple[Any, Any]) -> list[grpcclient.InferInput]:
    base = [tensor("input_ids", ids), tensor("input_lengths", len(ids)), tensor("request_output_len", MAX_TOKENS)]
    return base + [tensor(n, v, t) for n, (v, t) in extra.items()]


def text_of(result: Any) -> str:
    return "".join(v.decode() for v in result.as_numpy("text_output").reshape(-1))


def tokens_of(result: Any) -> list[list[int]]:
    """output_ids of the one row, cut at sequence_length per beam."""
    ids, lengths = result.as_numpy("output_ids")[0], result.as_numpy("sequence_length")[0]
    return [ids[k, : lengths[k]].tolist() for k in range(ids.shape[0])]


def stream(server: TritonServer, model: str, inputs: list[grpcclient.InferInput]) -> list[Any]:
    """All responses of one request over a gRPC stream (what decoupled models need), up to the final flag."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    received: queue.Queue[tuple[Any, Any]] = queue.Queue()
    results = []
    try:
        client.start_stream(callback=lambda result, error: received.put((result, error)))
        client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        while True:
            result, error = received.get(timeout=60)
            if error is not None:
                raise error
            response = result.get_response()
            if response.outputs:
                results.append(result)
            if response.parameters["triton_final_response"].bool_param:
                return results
    finally:
        client.stop_stream()
        client.close()


# ---------------------------------------------------------------------------------------- tests


def test_ensemble_and_bls_answer_what_transformers_generates(flan: Reference, client: grpcclient.InferenceServerClient) -> None:
    expected = [flan.text(p) for p in PROMPTS]
    assert all(expected)
    for prompt, want in zip(PROMPTS, expected, strict=True):
        assert text_of(client.infer("ensemble", text_inputs(prompt))) == want
        assert text_of(client.infer("tensorrt_llm_bls", text_inputs(prompt))) == want
    # All prompts as rows of one request: padded into one generate() call, still each row's own answer.
    rows = grpcclient.InferInput("text_input", [len(PROMPTS), 1], "BYTES")
    rows.set_data_from_numpy(np.array([[p.encode()] for p in PROMPTS], dtype=np.object_))
    limits = grpcclient.InferInput("max_tokens", [len(PROMPTS), 1], "INT32")
    limits.set_data_from_numpy(np.full((len(PROMPTS), 1), MAX_TOKENS, dtype=np.int32))
    texts = client.infer("ensemble", [rows, limits]).as_numpy("text_output")
    assert [t.decode() for t in texts.reshape(-1)] == expected


def test_beam_search_returns_every_beam_as_transformers_ranks_them(flan: Reference, client: grpcclient.InferenceServerClient) -> None:
    prompt = PROMPTS[1]
    result = client.infer("tensorrt_llm", token_inputs(flan.ids(prompt), beam_width=(2, np.int32), return_log_probs=(True, np.bool_)))
    assert tokens_of(result) == flan.beams(prompt, 2)
    assert result.as_numpy("output_ids").shape[:2] == (1, 2)
    assert result.as_numpy("cum_log_probs").shape == (1, 2)
    cum = result.as_numpy("cum_log_probs")[0]
    assert cum[0] >= cum[1]
    assert cum[1] < 0  # the tiny model is so sure of its best beam that its log-probability rounds to 0
    # Through the ensemble, one text per beam.
    texts = client.infer("ensemble", text_inputs(prompt, beam_width=(2, np.int32))).as_numpy("text_output")
    assert [t.decode() for t in texts.reshape(-1)] == [flan.tokenizer.decode(b) for b in flan.beams(prompt, 2)]


def test_end_id_stops_before_the_end_token(flan: Reference, client: grpcclient.InferenceServerClient) -> None:
    prompt = PROMPTS[0]
    greedy = flan.beams(prompt, 1)[0]
    end = greedy[3]
    want = greedy[: greedy.index(end)]
    result = client.infer("tensorrt_llm", token_inputs(flan.ids(prompt), end_id=(end, np.int32)))
    assert tokens_of(result) == [want]
    text = text_of(client.infer("ensemble", text_inputs(prompt, end_id=(end, np.int32))))
    assert text == flan.tokenizer.decode(want, skip_special_tokens=True)


def test_exclude_input_in_output_false_keeps_the_decoder_start_token(flan: Reference, client: grpcclient.InferenceServerClient) -> None:
    prompt = PROMPTS[2]
    result = client.infer("tensorrt_llm", token_inputs(flan.ids(prompt), exclude_input_in_output=(False, np.bool_)))
    assert tokens_of(result) == [[0, *flan.beams(prompt, 1)[0]]]  # pad id 0 is T5's decoder start


def test_token_counts_come_when_asked_and_min_tokens_reaches_tensorrt_llm(
    flan: Reference, client: grpcclient.InferenceServerClient
) -> None:
    prompt = PROMPTS[1]
    ids, greedy = flan.ids(prompt), flan.beams(prompt, 1)[0]
    assert client.infer("tensorrt_llm", token_inputs(ids)).as_numpy("num_input_tokens") is None
    flags = {"return_num_input_tokens": (True, np.bool_), "return_num_output_tokens": (True, np.bool_)}
    counted = client.infer("tensorrt_llm", token_inputs(ids, **flags))
    assert (counted.as_numpy("num_input_tokens").tolist(), counted.as_numpy("num_output_tokens").tolist()) == (
        [[len(ids)]],
        [[len(greedy)]],
    )
    for model in ("ensemble", "tensorrt_llm_bls"):
        result = client.infer(model, text_inputs(prompt, **flags))
        assert text_of(result) == flan.text(prompt)
        assert (result.as_numpy("num_input_tokens").tolist(), result.as_numpy("num_output_tokens").tolist()) == (
            [[len(ids)]],
            [[len(greedy)]],
        )
    # An answer that ends early is held to min_tokens (the pinned name; min_length is refused as unknown).
    short = next(p for p in PROMPTS if len(flan.beams(p, 1)[0]) < MAX_TOKENS)
    for model in ("ensemble", "tensorrt_llm_bls"):
        result = client.infer(model, text_inputs(short, min_tokens=(MAX_TOKENS, np.int32), **flags))
        assert result.as_numpy("num_output_tokens").tolist() == [[MAX_TOKENS]]
        with pytest.raises(InferenceServerException, match="min_length"):
            client.infer(model, text_inputs(short, min_length=(MAX_TOKENS, np.int32)))


def test_stop_and_bad_words_in_tensorrt_llm_layout(flan: Reference, client: grpcclient.InferenceServerClient) -> None:
    prompt = PROMPTS[0]
    ids, greedy = flan.ids(prompt), flan.beams(prompt, 1)[0]
    # [batch, 2, N]: ids of all words back to back, then each word's end offset, padded with -1.
    absent = next(t for t in range(3, 100) if t not in greedy)
    stop = [[[absent, greedy[2], greedy[3]], [1, 3, -1]]]
    result = client.infer("tensorrt_llm", token_inputs(ids, stop_words_list=(stop, np.int32)))
    assert tokens_of(result) == [greedy[:4]]
    bad = [[[greedy[0]], [1]]]
    result = client.infer("tensorrt_llm", token_inputs(ids, bad_words_list=(bad, np.int32)))
    want = flan.generate(prompt, bad_words_ids=[[greedy[0]]])[0].tolist()
    assert tokens_of(result) == [want[1 : want.index(1, 1)] if 1 in want[1:] else want[1:]]
    assert tokens_of(result)[0][0] != greedy[0]


def test_unsupported_requests_fail_alone_and_the_server_keeps_serving(flan: Reference, client: grpcclient.InferenceServerClient) -> None:
    ids = flan.ids(PROMPTS[0])
    with pytest.raises(InferenceServerException, match="greedy and beam search only"):
        client.infer("ensemble", text_inputs(PROMPTS[0], top_k=(5, np.int32)))
    with pytest.raises(InferenceServerException, match="greedy and beam search only"):
        client.infer("tensorrt_llm_bls", text_inputs(PROMPTS[0], top_p=(0.9, np.float32)))
    with pytest.raises(InferenceServerException, match="decoupled"):
        client.infer("tensorrt_llm", token_inputs(ids, streaming=(True, np.bool_)))
    # A sampling request and a greedy one sent together (the dynamic batcher may put them in one batch).
    done: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
    for name, extra in (("bad", {"runtime_top_k": (40, np.int32)}), ("good", {})):
        client.async_infer("tensorrt_llm", token_inputs(ids, **extra), lambda result, error, n=name: done.put((n, result, error)))
    answers = {name: (result, error) for name, result, error in (done.get(timeout=60) for _ in range(2))}
    assert answers["bad"][0] is None
    assert "greedy and beam search only" in str(answers["bad"][1])
    assert tokens_of(answers["good"][0]) == [flan.beams(PROMPTS[0], 1)[0]]
    assert text_of(client.infer("ensemble", text_inputs(PROMPTS[2]))) == flan.text(PROMPTS[2])


def test_decoupled_repository_answers_what_transformers_generates(v1_0: Reference, streaming_server: TritonServer) -> None:
    for prompt in PROMPTS:
        want = v1_0.text(prompt)
        for model in ("ensemble", "tensorrt_llm_bls"):
            responses = stream(streaming_server, model, text_inputs(prompt))
            assert [text_of(r) for r in responses] == [want]


def test_bls_streams_text_that_concatenates_to_the_whole_answer(v1_0: Reference, streaming_server: TritonServer) -> None:
    prompt = PROMPTS[2]
    pieces = [text_of(r) for r in stream(streaming_server, "tensorrt_llm_bls", text_inputs(prompt, stream=(True, np.bool_)))]
    assert len(pieces) > 3
    assert "".join(pieces) == v1_0.text(prompt)


def test_tensorrt_llm_streams_one_token_per_response(v1_0: Reference, streaming_server: TritonServer) -> None:
    prompt = PROMPTS[2]
    ids = v1_0.ids(prompt)
    whole = tokens_of(stream(streaming_server, "tensorrt_llm", token_inputs(ids))[0])[0]
    responses = stream(streaming_server, "tensorrt_llm", token_inputs(ids, streaming=(True, np.bool_)))
    chunks = [tokens_of(r)[0] for r in responses]
    assert len(chunks) > 3
    assert all(len(c) == 1 for c in chunks)
    assert [t for c in chunks for t in c] == whole == v1_0.beams(prompt, 1)[0]
