from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest

from tasks.bench import metrics, perfcsv, perfrun, perftools
from tasks.core.errors import UserError
from tests.helpers import FAKES

PA = perfrun.PERF_ANALYZER
GENAI = perfrun.GENAI_PERF

# ------------------------------------------------------------------------ fixtures


@pytest.fixture
def fakes_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Put the fake tools first on PATH; returns the file their argv is recorded in."""
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("FAKE_TOOL_ARGV", str(argv_log))
    for name in ("FAKE_TOOL_EXIT", "FAKE_TOOL_HANG", "FAKE_TOOL_PIDS"):
        monkeypatch.delenv(name, raising=False)
    return argv_log


def make_run(tmp_path: Path, concurrency: int = 2, *, streaming: bool = False) -> perfrun.ToolRun:
    work = tmp_path / f"work-c{concurrency}"
    work.mkdir(exist_ok=True)
    return perfrun.ToolRun(
        model="ensemble",
        grpc_url="127.0.0.1:8001",
        concurrency=concurrency,
        measurement_interval_ms=1000,
        stability_percentage=12.5,
        max_trials=4,
        streaming=streaming,
        work_dir=work,
        log_path=tmp_path / "logs" / "bench-tool.log",
    )


def input_data(tmp_path: Path) -> Path:
    path = tmp_path / "input_data.json"
    perftools.write_input_data(path, [{"input_ids": np.array([101, 7, 102], dtype=np.int64)}])
    return path


def recorded(argv_log: Path) -> list[list[str]]:
    return [json.loads(line) for line in argv_log.read_text().splitlines()]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


class GenaiArgs(TypedDict):
    tokenizer_dir: Path
    input_tokens: int
    output_tokens: int
    num_prompts: int
    seed: int
    prompts_file: Path | None
    ignore_eos: bool


def genai_kwargs(tmp_path: Path, *, prompts_file: Path | None = None, output_tokens: int = 64, ignore_eos: bool = False) -> GenaiArgs:
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir(exist_ok=True)
    return GenaiArgs(
        tokenizer_dir=tokenizer,
        input_tokens=32,
        output_tokens=output_tokens,
        num_prompts=10,
        seed=7,
        prompts_file=prompts_file,
        ignore_eos=ignore_eos,
    )


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# --------------------------------------------------------------- perf_analyzer CSV

PA_DECOUPLED = """\
Concurrency,Inferences/Second,Response Throughput,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait
4,180.2,2883.2,31,402,9050,14,12800,22,8,21000,24500,25800,27900,22327,16,1200
1,61.5,984.0,25,290,12,11,15800,19,6,16000,16900,17200,17700,16163,16,900
2,110.9,1774.4,28,350,2950,13,14500,20,7,17800,19900,20500,21600,17888,16,1000
"""

PA_NO_SERVER_STATS = """\
Concurrency,Inferences/Second,Client Send,Client Recv,p50 latency,p75 latency,p90 latency,p95 latency,p99 latency
8,950.5,40,12,8100,8400,8800,9100,9900
"""

PA_WITH_CACHE = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Server Cache Hit,Server Cache Miss,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait,Avg GPU Utilization
1,500.25,10,100,5,6,1700,7,40,0,3,1950,2100,2200,2400,1998,1,1900,GPU-0:0.5;
"""


def test_perf_analyzer_rows_are_sorted_by_concurrency_and_response_throughput_is_ignored() -> None:
    rows = perfcsv.parse_perf_analyzer_csv(PA_DECOUPLED)
    assert [row[metrics.CONCURRENCY] for row in rows] == [1.0, 2.0, 4.0]
    assert all(set(row) == set(metrics.PA_COLUMNS) for row in rows)
    assert rows[2] == {
        metrics.CONCURRENCY: 4.0,
        metrics.THROUGHPUT: 180.2,
        metrics.CLIENT_SEND: 31.0,
        metrics.NETWORK: 402.0,
        metrics.SERVER_QUEUE: 9050.0,
        metrics.COMPUTE_INPUT: 14.0,
        metrics.COMPUTE_INFER: 12800.0,
        metrics.COMPUTE_OUTPUT: 22.0,
        metrics.CLIENT_RECV: 8.0,
        "p50 latency": 21000.0,
        "p90 latency": 24500.0,
        "p95 latency": 25800.0,
        "p99 latency": 27900.0,
        metrics.AVG_LATENCY: 22327.0,
    }


def test_perf_analyzer_missing_columns_are_none_and_extra_ones_ignored() -> None:
    (row,) = perfcsv.parse_perf_analyzer_csv(PA_NO_SERVER_STATS)
    assert row[metrics.THROUGHPUT] == 950.5
    assert row["p99 latency"] == 9900.0
    assert "p75 latency" not in row
    for column in (metrics.NETWORK, *metrics.SERVER_COLUMNS, metrics.AVG_LATENCY):
        assert row[column] is None
    (cached,) = perfcsv.parse_perf_analyzer_csv(PA_WITH_CACHE)
    assert cached[metrics.COMPUTE_INFER] == 1700.0
    assert cached[metrics.CLIENT_RECV] == 3.0
    assert set(cached) == set(metrics.PA_COLUMNS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Request Rate,Inferences/Second,Client Send\n100,99.5,12\n", "request-rate mode"),
        ("", "empty CSV"),
        ("Throughput,Latency\n1,2\n", "expected 'Concurrency'"),
        ("Concurrency,Inferences/Second\n1,fast\n", "unexpected value 'fast'"),
    ],
)
def test_perf_analyzer_csv_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        perfcsv.parse_perf_analyzer_csv(text)


# ------------------------------------------------------------------- genai-perf CSV

GENAI_STREAMING = """\
Metric,avg,min,max,p99,p95,p90,p75,p50,p25,p10,p5,p1
Time To First Token (ms),12.34,9.10,20.00,19.80,18.00,16.50,14.00,12.00,10.50,9.80,9.50,9.20
Time To Second Token (ms),3.10,2.90,3.60,3.58,3.50,3.40,3.20,3.10,3.00,2.95,2.92,2.91
Request Latency (ms),"1,234.56","1,100.00","1,400.00","1,390.00","1,350.00","1,300.00","1,250.00","1,230.00","1,200.00","1,150.00","1,120.00","1,105.00"
Inter Token Latency (ms),9.50,9.00,10.20,10.10,10.00,9.90,9.70,9.45,9.30,9.20,9.10,9.05
Output Token Throughput Per User (tokens/sec/user),105.26,98.04,111.11,110.90,110.00,109.00,107.00,105.80,103.00,101.00,99.00,98.50
Output Sequence Length (tokens),128.00,128.00,128.00,128.00,128.00,128.00,128.00,128.00,128.00,128.00,128.00,128.00
Input Sequence Length (tokens),200.00,199.00,201.00,201.00,201.00,201.00,200.00,200.00,200.00,199.00,199.00,199.00

Metric,Value
Output Token Throughput (tokens/sec),"2,074.35"
Request Throughput (per sec),16.21
Request Count (count),195.00
"""

GENAI_OLD_NON_STREAMING = """\
Metric,avg,min,max,p99,p95,p90,p75,p50,p25
Request Latency (ms),45.10,40.00,60.00,59.00,N/A,55.00,50.00,44.00,42.00
Output Sequence Length (tokens),N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A
Input Sequence Length (tokens),16.00,16.00,16.00,16.00,16.00,16.00,16.00,16.00,16.00

Metric,Value
Output Token Throughput (tokens/sec),N/A
Request Throughput (per sec),22.17
Request Count (count),67.00
"""


def test_genai_perf_current_header_with_thousands_separators() -> None:
    row = perfcsv.parse_genai_perf_csv(GENAI_STREAMING)
    assert set(row) == set(metrics.columns(llm=True))
    assert row[metrics.llm_column(metrics.TTFT, "avg")] == 12.34
    assert row[metrics.llm_column(metrics.TTFT, "p99")] == 19.80
    assert row[metrics.llm_column(metrics.ITL, "p50")] == 9.45
    assert row[metrics.llm_column(metrics.REQUEST_LATENCY, "avg")] == 1234.56
    assert row[metrics.llm_column(metrics.OSL, "p90")] == 128.0
    assert row[metrics.llm_column(metrics.ISL, "avg")] == 200.0
    assert row[metrics.OUTPUT_TOKEN_THROUGHPUT] == 2074.35
    assert row[metrics.REQUEST_THROUGHPUT] == 16.21
    # perf_analyzer's view: request throughput, request latency in microseconds.
    assert row[metrics.THROUGHPUT] == 16.21
    assert row[metrics.AVG_LATENCY] == pytest.approx(1_234_560.0)
    assert row["p95 latency"] == pytest.approx(1_350_000.0)
    assert row["p99 latency"] == pytest.approx(1_390_000.0)
    for column in (metrics.CONCURRENCY, metrics.CLIENT_SEND, metrics.CLIENT_RECV, metrics.NETWORK, *metrics.SERVER_COLUMNS):
        assert row[column] is None


def test_genai_perf_older_header_non_streaming_and_na() -> None:
    row = perfcsv.parse_genai_perf_csv(GENAI_OLD_NON_STREAMING)
    for stat in metrics.LLM_STATS:
        assert row[metrics.llm_column(metrics.TTFT, stat)] is None
        assert row[metrics.llm_column(metrics.ITL, stat)] is None
        assert row[metrics.llm_column(metrics.OSL, stat)] is None
    assert row[metrics.llm_column(metrics.REQUEST_LATENCY, "p99")] == 59.0
    assert row[metrics.llm_column(metrics.ISL, "p50")] == 16.0
    assert row["p95 latency"] is None
    assert row["p90 latency"] == pytest.approx(55_000.0)
    assert row[metrics.OUTPUT_TOKEN_THROUGHPUT] is None
    assert row[metrics.REQUEST_THROUGHPUT] == 22.17


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no 'Metric' table"),
        ("Metric,avg\nSomething Else (ms),1.0\n", "none of the expected metrics"),
        ("Metric,Value\nRequest Throughput (per sec),lots\n", "unexpected value 'lots'"),
    ],
)
def test_genai_perf_csv_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        perfcsv.parse_genai_perf_csv(text)


# ----------------------------------------------------------------------- inputs, argv


def test_input_data_drops_nothing_and_decodes_bytes(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    perftools.write_input_data(
        path,
        [
            {"input_ids": np.array([[1, 2], [3, 4]], dtype=np.int32), "text_input": np.array([b"hi \xc3\xa9"], dtype=object)},
            {"input_ids": np.array([[5, 6], [7, 8]], dtype=np.int32), "text_input": np.array(["plain"], dtype=object)},
        ],
    )
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    assert data[0]["input_ids"] == {"content": [1, 2, 3, 4], "shape": [2, 2]}
    assert data[0]["text_input"] == {"content": ["hi é"], "shape": [1]}
    assert data[1]["text_input"]["content"] == ["plain"]
    with pytest.raises(ValueError, match="at least one request"):
        perftools.write_input_data(path, [])


def test_perf_analyzer_argv(tmp_path: Path) -> None:
    run = make_run(tmp_path, 3, streaming=True)
    argv = perftools.perf_analyzer_argv(Path("/sdk/perf_analyzer"), run, batch_size=4, input_data=Path("rel/data.json"), csv_name="pa.csv")
    assert argv[0] == "/sdk/perf_analyzer"
    assert flag(argv, "-f") == "pa.csv"
    assert flag(argv, "--concurrency-range") == "3:3"
    assert flag(argv, "-b") == "4"
    assert flag(argv, "-i") == "grpc"
    assert flag(argv, "--stability-percentage") == "12.5"
    assert flag(argv, "--input-data") == str(Path.cwd() / "rel" / "data.json")
    assert "--streaming" in argv
    assert "--verbose-csv" in argv
    plain = perftools.perf_analyzer_argv(Path("pa"), make_run(tmp_path), batch_size=1, input_data=Path("/d.json"), csv_name="pa.csv")
    assert "--streaming" not in plain
    with pytest.raises(ValueError, match="bare file name"):
        perftools.perf_analyzer_argv(Path("pa"), run, batch_size=1, input_data=Path("/d.json"), csv_name="out/pa.csv")


def test_genai_perf_argv_synthetic_and_from_file(tmp_path: Path) -> None:
    run = make_run(tmp_path, streaming=True)
    argv = perftools.genai_perf_argv(Path("genai-perf"), run, **genai_kwargs(tmp_path, ignore_eos=True))
    assert argv[1] == "profile"
    assert flag(argv, "--endpoint-type") == "kserve"
    assert flag(argv, "--backend") == "tensorrtllm"
    assert "--service-kind" not in argv
    assert flag(argv, "--synthetic-input-tokens-mean") == "32"
    assert flag(argv, "--num-dataset-entries") == "10"
    assert flag(argv, "--extra-inputs") == "min_tokens:64"
    assert flag(argv, "--profile-export-file") == "profile_export.json"
    assert Path(flag(argv, "--artifact-dir")).is_relative_to(run.work_dir.absolute())
    assert "--streaming" in argv
    assert "--input-file" not in argv

    prompts = tmp_path / "prompts.txt"
    from_file = perftools.genai_perf_argv(Path("genai-perf"), make_run(tmp_path), **genai_kwargs(tmp_path, prompts_file=prompts))
    assert flag(from_file, "--input-file") == str(perftools.genai_prompts_path(run).absolute())
    assert "--synthetic-input-tokens-mean" not in from_file
    assert "--streaming" not in from_file
    assert "--extra-inputs" not in from_file


def test_prompts_become_jsonl(tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text('first prompt\n\n  "quoted", second  \n', encoding="utf-8")
    dest = tmp_path / "prompts.jsonl"
    assert perftools.write_genai_prompts(source, dest) == 2
    assert [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()] == [
        {"text": "first prompt"},
        {"text": '"quoted", second'},
    ]
    source.write_text("\n \n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no prompt"):
        perftools.write_genai_prompts(source, dest)


@pytest.mark.usefixtures("fakes_on_path")
def test_find_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    assert perfrun.find_tool(PA) == FAKES / PA
    monkeypatch.setenv("PATH", "")
    with pytest.raises(UserError) as caught:
        perfrun.find_tool(GENAI)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("bench.tool: genai-perf is not on PATH")
    assert "nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk" in message
    assert "bench.tool: builtin" in message
    with pytest.raises(UserError, match="unknown tool"):
        perfrun.find_tool("aiperf")


# ------------------------------------------------------------------ runs with fakes


def test_run_perf_analyzer_with_the_fake(tmp_path: Path, fakes_on_path: Path) -> None:
    run = make_run(tmp_path, 2, streaming=True)
    (run.work_dir / perfrun.PA_CSV_NAME).write_text("Concurrency,Inferences/Second\n2,1\n")  # stale
    row = perftools.run_perf_analyzer(perfrun.find_tool(PA), run, batch_size=3, input_data=input_data(tmp_path))
    # The fake: average latency 1000 + 500*c us, throughput c*b*1e6/latency.
    assert row[metrics.CONCURRENCY] == 2.0
    assert row[metrics.THROUGHPUT] == pytest.approx(3000.0)
    assert row[metrics.AVG_LATENCY] == 2000.0
    assert row["p99 latency"] == 2500.0
    assert row[metrics.SERVER_QUEUE] == 110.0
    assert set(row) == set(metrics.PA_COLUMNS)
    (argv,) = recorded(fakes_on_path)
    assert flag(argv, "-f") == perfrun.PA_CSV_NAME
    assert "--streaming" in argv
    log_text = run.log_path.read_text()
    assert "perf_analyzer in" in log_text
    assert "Measurement Settings" in log_text


@pytest.mark.usefixtures("fakes_on_path")
def test_run_genai_perf_streaming_with_the_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the run sets it for the tool
    run = make_run(tmp_path, 2, streaming=True)
    row = perftools.run_genai_perf(perfrun.find_tool(GENAI), run, **genai_kwargs(tmp_path))
    # The fake: request latency 10*c + 0.5*M ms, TTFT 2*c ms, 1000*c/latency requests per second.
    latency, rps = 52.0, 2000.0 / 52.0
    assert row[metrics.CONCURRENCY] == 2.0
    assert row[metrics.llm_column(metrics.REQUEST_LATENCY, "avg")] == latency
    assert row[metrics.llm_column(metrics.TTFT, "avg")] == 4.0
    assert row[metrics.llm_column(metrics.ITL, "avg")] == pytest.approx(48.0 / 63, abs=0.01)
    assert row[metrics.llm_column(metrics.OSL, "p99")] == 64.0
    assert row[metrics.llm_column(metrics.ISL, "avg")] == 32.0
    assert row[metrics.OUTPUT_TOKEN_THROUGHPUT] == pytest.approx(rps * 64, abs=0.01)  # printed "2,461.54"
    assert row[metrics.REQUEST_THROUGHPUT] == pytest.approx(rps, abs=0.01)
    assert row[metrics.THROUGHPUT] == row[metrics.REQUEST_THROUGHPUT]
    assert row[metrics.AVG_LATENCY] == pytest.approx(latency * 1000)
    assert row[metrics.SERVER_QUEUE] is None


def test_run_genai_perf_non_streaming_from_a_prompts_file(tmp_path: Path, fakes_on_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one two three four\nfive six\n", encoding="utf-8")
    run = make_run(tmp_path, 1)
    row = perftools.run_genai_perf(perfrun.find_tool(GENAI), run, **genai_kwargs(tmp_path, prompts_file=prompts, output_tokens=1))
    assert row[metrics.llm_column(metrics.ISL, "avg")] == 3.0  # words per prompt, as the fake counts them
    assert row[metrics.llm_column(metrics.TTFT, "avg")] is None
    assert row[metrics.llm_column(metrics.ITL, "p99")] is None
    assert row[metrics.llm_column(metrics.REQUEST_LATENCY, "p50")] == 10.5
    (argv,) = recorded(fakes_on_path)
    assert flag(argv, "--input-file") == str(perftools.genai_prompts_path(run).absolute())


@pytest.mark.usefixtures("fakes_on_path")
@pytest.mark.parametrize("tool", [PA, GENAI])
def test_a_failing_tool_names_itself_the_exit_code_and_the_log(tool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TOOL_EXIT", "3")
    run = make_run(tmp_path, 4)
    with pytest.raises(UserError) as caught:
        measure(tool, run, tmp_path)
    first, _, tail = str(caught.value).partition("\n")
    assert first == f"bench.tool: {tool} failed with exit code 3 at concurrency 4 (log: {run.log_path})"
    assert tail
    assert all(line in run.log_path.read_text() for line in tail.splitlines())


def measure(tool: str, run: perfrun.ToolRun, tmp_path: Path, timeout_s: float | None = None) -> metrics.Row:
    binary = perfrun.find_tool(tool)
    if tool == PA:
        return perftools.run_perf_analyzer(binary, run, batch_size=1, input_data=input_data(tmp_path), timeout_s=timeout_s)
    return perftools.run_genai_perf(binary, run, **genai_kwargs(tmp_path), timeout_s=timeout_s)


@pytest.mark.parametrize("tool", [PA, GENAI])
def test_missing_output_names_the_expected_file(tool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tool that exits 0 and writes nothing.
    silent = tmp_path / "bin" / tool
    silent.parent.mkdir()
    silent.write_text("#!/bin/sh\nexit 0\n")
    silent.chmod(0o755)
    monkeypatch.setenv("PATH", str(silent.parent))
    run = make_run(tmp_path)
    expected = "perf_analyzer.csv" if tool == PA else "genai-perf-artifacts/**/profile_export_genai_perf.csv"
    with pytest.raises(UserError, match=f"{tool} exited 0 but wrote no .*{re.escape(expected)}"):
        measure(tool, run, tmp_path)


def read_pids(path: Path) -> list[int]:
    deadline = time.monotonic() + 5
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, "the fake never wrote its pids"
        time.sleep(0.02)
    return [int(pid) for pid in path.read_text().split()]


@pytest.mark.usefixtures("fakes_on_path")
@pytest.mark.parametrize(("tool", "hang"), [(PA, "1"), (GENAI, "1"), (PA, "ignore-term")])
def test_a_hanging_tool_is_killed_with_its_children(tool: str, hang: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids_file = tmp_path / "pids"
    monkeypatch.setenv("FAKE_TOOL_HANG", hang)
    monkeypatch.setenv("FAKE_TOOL_PIDS", str(pids_file))
    monkeypatch.setattr(perfrun, "_TERM_GRACE_S", 0.3)
    run = make_run(tmp_path)
    with pytest.raises(UserError, match=f"{tool} did not finish within 1 s at concurrency 2"):
        measure(tool, run, tmp_path, timeout_s=1.0)
    pids = read_pids(pids_file)
    assert len(pids) == 2
    assert not [pid for pid in pids if alive(pid)]


@pytest.mark.usefixtures("fakes_on_path")
def test_ctrl_c_kills_the_tool_and_propagates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids_file = tmp_path / "pids"
    monkeypatch.setenv("FAKE_TOOL_HANG", "1")
    monkeypatch.setenv("FAKE_TOOL_PIDS", str(pids_file))

    def interrupted(pid: int, timeout_s: float, **_: bool) -> int | None:  # noqa: ARG001
        read_pids(pids_file)
        raise KeyboardInterrupt

    waits: list[Callable[..., int | None]] = [interrupted, perfrun._wait_exit]

    def first_interrupted(pid: int, timeout_s: float, **kwargs: bool) -> int | None:
        return waits.pop(0)(pid, timeout_s, **kwargs)

    monkeypatch.setattr(perfrun, "_wait_exit", first_interrupted)
    with pytest.raises(KeyboardInterrupt):
        measure(PA, make_run(tmp_path), tmp_path)
    assert not [pid for pid in read_pids(pids_file) if alive(pid)]
