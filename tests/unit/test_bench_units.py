"""The arithmetic behind the benchmark columns, on hand-made samples with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.bench import loadgen, metrics, results, serverstats, workload
from tasks.bench.serverstats import Counters
from tasks.commands.conformance.fixtures import train_tokenizer
from tasks.core.errors import UserError


def test_latency_row_matches_perf_analyzer_definitions() -> None:
    latencies_us = [1000, 2000, 3000, 4000]
    client = metrics.ClientSamples(
        duration_ns=2_000_000_000, latencies_ns=[t * 1000 for t in latencies_us], send_ns=[10_000] * 4, recv_ns=[20_000] * 4, batch_size=2
    )
    server = metrics.ServerTimes(queue=100.0, compute_input=50.0, compute_infer=1500.0, compute_output=50.0)
    row = metrics.latency_row(4, client, server)
    assert row[metrics.CONCURRENCY] == 4
    assert row[metrics.THROUGHPUT] == pytest.approx(4 * 2 / 2.0)  # requests x batch / seconds
    assert row[metrics.AVG_LATENCY] == pytest.approx(2500)
    assert row[metrics.CLIENT_SEND] == pytest.approx(10)
    assert row[metrics.CLIENT_RECV] == pytest.approx(20)
    assert row[metrics.NETWORK] == pytest.approx(2500 - 10 - 20 - 1700)
    assert row["p50 latency"] == pytest.approx(np.percentile(latencies_us, 50))
    assert row["p99 latency"] == pytest.approx(np.percentile(latencies_us, 99))


def test_network_time_never_goes_negative_and_missing_server_stats_stay_empty() -> None:
    client = metrics.ClientSamples(10**9, [1_000_000], [0], [0])
    overlapping = metrics.ServerTimes(0.0, 0.0, 2000.0, 0.0)  # streamed steps overlap: sum > latency
    assert metrics.latency_row(1, client, overlapping)[metrics.NETWORK] == 0.0
    row = metrics.latency_row(1, client, None)
    assert all(row[c] is None for c in (*metrics.SERVER_COLUMNS, metrics.NETWORK))


def test_llm_row_uses_genai_perf_definitions() -> None:
    samples = metrics.TokenSamples(
        duration_ns=2 * 10**9,
        latencies_ns=[100_000_000, 60_000_000],
        first_token_ns=[10_000_000, 20_000_000],
        output_tokens=[10, 1],
        input_tokens=[12, 14],
    )
    row = metrics.llm_row(samples)
    assert row["Time To First Token (ms) avg"] == pytest.approx(15)
    # (100 - 10) ms over 9 gaps; a one-token answer has no inter-token latency.
    assert row["Inter Token Latency (ms) avg"] == pytest.approx(10)
    assert row["Request Latency (ms) p50"] == pytest.approx(80)
    assert row["Input Sequence Length (tokens) avg"] == pytest.approx(13)
    assert row[metrics.OUTPUT_TOKEN_THROUGHPUT] == pytest.approx(11 / 2)
    assert row[metrics.REQUEST_THROUGHPUT] == pytest.approx(1)
    unstreamed = metrics.llm_row(metrics.TokenSamples(10**9, [5], None, [3], [4]))
    assert unstreamed["Time To First Token (ms) avg"] is None
    assert unstreamed["Inter Token Latency (ms) p99"] is None


def test_ensemble_server_time_sums_composing_models_per_request() -> None:
    before = {
        "ens": Counters(10, 0, 0, 0, 0),
        "pre": Counters(10, 100, 0, 0, 0),
        "llm": Counters(10, 0, 0, 0, 0),
        "post": Counters(30, 0, 0, 0, 0),
    }
    after = {
        "ens": Counters(12, 0, 0, 0, 0),
        "pre": Counters(12, 100 + 4_000, 2_000, 6_000, 0),
        "llm": Counters(12, 0, 0, 20_000_000, 0),
        "post": Counters(50, 0, 0, 40_000, 0),  # postprocessing ran once per streamed token
    }
    times = serverstats.server_times(before, after, "ens", ["pre", "llm", "post"])
    assert times is not None
    assert times.queue == pytest.approx(2)  # 4 µs over 2 requests
    assert times.compute_input == pytest.approx(1)
    assert times.compute_infer == pytest.approx((6_000 + 20_000_000 + 40_000) / 2 / 1000)
    assert serverstats.server_times(before, before, "ens", ["pre"]) is None


def test_composing_models_follow_nested_ensembles() -> None:
    steps = {"outer": ["pre", "inner"], "inner": ["llm", "post", "pre"]}
    assert serverstats.composing_models("outer", steps) == ["pre", "llm", "post"]
    assert serverstats.composing_models("bls", steps) == ["bls"]


@pytest.mark.parametrize(
    ("windows", "stable"),
    [
        ([(100.0, 10.0), (104.0, 10.2), (98.0, 9.9)], True),
        ([(50.0, 10.0), (100.0, 10.0), (104.0, 10.2), (98.0, 9.9)], True),  # only the last three count
        ([(100.0, 10.0), (130.0, 10.0), (98.0, 9.9)], False),  # throughput off by more than 10 %
        ([(100.0, 10.0), (100.0, 14.0), (100.0, 10.0)], False),  # latency off
        ([(100.0, 10.0), (100.0, 10.0)], False),  # too few windows
        ([(0.0, 0.0)] * 3, False),  # nothing completed
    ],
)
def test_stability_rule(windows: list[tuple[float, float]], stable: bool) -> None:  # noqa: FBT001 - parametrized
    assert loadgen.is_stable(windows, 10.0) is stable


def test_csv_cells_follow_the_tools_habits() -> None:
    rows: list[metrics.Row] = [{metrics.CONCURRENCY: 8.0, metrics.THROUGHPUT: 123.4567, "p99 latency": 1234.6, metrics.CLIENT_SEND: None}]
    text = results.csv_text([metrics.CONCURRENCY, metrics.THROUGHPUT, "p99 latency", metrics.CLIENT_SEND], rows)
    assert text == "Concurrency,Inferences/Second,p99 latency,Client Send\n8,123.457,1235,\n"


def test_bytes_payload_uses_tritons_wire_format() -> None:
    payload = loadgen.Payload.from_arrays({"text": np.array([[b"ab"], [b"xyz"]], dtype=np.object_), "n": np.array([[3]], dtype=np.int32)})
    assert [(t.name, t.datatype, list(t.shape)) for t in payload.tensors] == [("text", "BYTES", [2, 1]), ("n", "INT32", [1, 1])]
    assert payload.raw[0] == b"\x02\x00\x00\x00ab\x03\x00\x00\x00xyz"
    assert payload.raw[1] == np.int32(3).tobytes()


def test_synthetic_prompts_are_reproducible_and_sized_by_the_tokenizer(tmp_path: Path) -> None:
    train_tokenizer(tmp_path)
    tokenizer = workload.load_tokenizer(tmp_path)
    bench = {"num_prompts": 6, "input_tokens": 9, "seed": 3}
    first = workload.prompts(tokenizer, bench, None, "models/x.yaml")
    again = workload.prompts(tokenizer, bench, None, "models/x.yaml")
    other = workload.prompts(tokenizer, {**bench, "seed": 4}, None, "models/x.yaml")
    assert first == again
    assert [p.text for p in first] != [p.text for p in other]
    assert len({p.text for p in first}) == 6
    assert all(7 <= p.tokens <= 11 for p in first), first  # a cut at a token boundary can re-tokenize +-2


def test_prompts_file_lines(tmp_path: Path) -> None:
    train_tokenizer(tmp_path / "tok")
    tokenizer = workload.load_tokenizer(tmp_path / "tok")
    path = tmp_path / "prompts.txt"
    path.write_text("first prompt\n\n  second prompt  \n", encoding="utf-8")
    assert [p.text for p in workload.prompts(tokenizer, {}, path, "m.yaml")] == ["first prompt", "second prompt"]
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(UserError, match=r"m\.yaml: bench\.prompts: .* holds no prompt"):
        workload.prompts(tokenizer, {}, path, "m.yaml")
