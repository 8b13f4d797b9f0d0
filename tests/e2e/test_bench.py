"""bench: real Triton on the cpu target, CSV/JSON/PNG outputs, rebuild rules and process hygiene.

One tiny BERT project is built once; the tests then walk through edits in order (each
leaves the project built for the next one).  The tiny T5 is served decoupled so time to
first token is measured from streamed responses.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.bench import metrics
from tasks.commands.conformance.fixtures import build_tiny_t5
from tasks.commands.conformance.project import LLM_YAML
from tests.helpers import FAKES, TINY_YAML, DoitRun, communicate_or_kill, copy_project, doit_argv, doit_env, edit, read_json, run_doit

BENCH = """\
bench:
  concurrency: [1, 3]
  measurement_interval_ms: 300
  stability_percentage: 50
  max_trials: 4
  warmup_requests: 3
  num_prompts: 10
  input_tokens: 8
"""
ALL = {"fetch:tiny", "export:tiny", "engine:tiny", "config:tiny", "repo:tiny", "bench:tiny"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def number(row: dict[str, str], column: str) -> float:
    return float(row[column])


def processes_in(project: Path) -> list[str]:
    """Live processes whose working directory is *project* (the server, its stubs, any tool)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "cwd").resolve() != project.resolve():
                continue
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            name = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if state != "Z":
            found.append(f"{proc.name} {name}")
    return found


@contextlib.contextmanager
def default_ports_taken() -> Iterator[None]:
    """Hold Triton's default ports (where free) for the duration: bench must pick others."""
    socks = []
    try:
        for port in (8000, 8001, 8002):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port))
                sock.listen()
            socks.append(sock)
        yield
    finally:
        for sock in socks:
            sock.close()


def build(project: Path, *extra: str, env: dict[str, str] | None = None) -> DoitRun:
    result = run_doit(project, "build:tiny", "target=cpu", *extra, env=env)
    assert result.rc == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def project(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("bench"), {"tiny": TINY_YAML.format(path=tiny_bert) + BENCH})
    with default_ports_taken():
        first = build(root)
    assert first.executed == ALL
    return root


def test_csv_has_perf_analyzer_columns_and_sane_numbers(project: Path) -> None:
    header, rows = read_csv(project / "results/tiny/cpu/tiny.csv")
    assert header == list(metrics.PA_COLUMNS + metrics.CPU_COLUMNS)
    assert [int(r["Concurrency"]) for r in rows] == [1, 3]
    for row in rows:
        assert number(row, "Inferences/Second") > 0
        p50, p90, p95, p99 = (number(row, f"p{p} latency") for p in (50, 90, 95, 99))
        assert 0 < p50 <= p90 <= p95 <= p99
        assert all(row[c] != "" for c in header), row  # server-side columns come from Triton's statistics
        assert number(row, "Server Compute Infer") > 0
        # The client and the server both took CPU; the machine was at least as busy as both.
        client, server = number(row, metrics.CLIENT_CPU), number(row, metrics.SERVER_CPU)
        assert 0 < client < 2
        assert server > 0
        assert number(row, metrics.CLIENT_CPU_PER_REQUEST) > 0
        assert number(row, metrics.SERVER_CPU_PER_REQUEST) > 0
        assert number(row, metrics.MACHINE_CPU) >= (client + server) * 0.8  # ticks round down
    assert processes_in(project) == []


def test_json_and_png_carry_the_same_numbers_and_the_run_facts(project: Path) -> None:
    doc = read_json(project / "results/tiny/cpu/tiny.json")
    assert doc["model"] == "tiny"
    assert doc["variant"] == "tiny"
    assert doc["served_model"] == "tiny"
    assert doc["target"] == "cpu"
    assert doc["tool"] == "builtin"
    assert doc["streaming"] is False
    assert isinstance(doc["toolchain"], dict)
    assert doc["toolchain"]["tritonserver"] == "2.51.0"
    # The settings the measured engine was built with: on cpu, the keys onnxruntime's engine reads.
    assert doc["engine"] == {"max_batch_size": 8, "max_seq_len": 32}
    git = doc["git"]
    assert isinstance(git, dict)
    assert set(git) == {"commit", "dirty"}
    assert str(doc["date"]).startswith(time.strftime("%Y-"))
    _, rows = read_csv(project / "results/tiny/cpu/tiny.csv")
    json_rows = doc["rows"]
    assert isinstance(json_rows, list)
    for csv_row, json_row in zip(rows, json_rows, strict=True):
        assert round(json_row["p99 latency"]) == int(csv_row["p99 latency"])
    assert (project / "results/tiny/cpu/tiny.png").read_bytes().startswith(PNG_MAGIC)
    for suffix in ("csv", "json", "png"):
        assert (project / f"results/tiny/cpu/tiny.{suffix}").read_bytes() == (project / f"build/tiny/bench/cpu/tiny.{suffix}").read_bytes()


def test_noop_runs_nothing(project: Path) -> None:
    assert build(project).executed == set()


def test_concurrency_edit_reruns_only_bench(project: Path) -> None:
    edit(project / "models/tiny.yaml", "concurrency: [1, 3]", "concurrency: [2]")
    assert build(project).executed == {"bench:tiny"}
    _, rows = read_csv(project / "results/tiny/cpu/tiny.csv")
    assert [r["Concurrency"] for r in rows] == ["2"]


def test_triton_edit_reruns_config_repo_and_bench(project: Path) -> None:
    edit(project / "models/tiny.yaml", "triton:\n  max_batch_size: 8\n", "triton:\n  max_batch_size: 8\n  max_queue_delay_us: 300\n")
    assert build(project).executed == {"config:tiny", "repo:tiny", "bench:tiny"}


def test_deleted_result_is_restored_without_rerunning_the_benchmark(project: Path) -> None:
    before = (project / "build/tiny/bench/cpu/tiny.csv").read_bytes()
    (project / "results/tiny/cpu/tiny.csv").unlink()
    result = build(project)
    assert result.executed == {"bench:tiny"}
    assert "bench:tiny: output already built with these inputs and params; reused" in result.stderr
    assert "starting Triton" not in result.stderr
    assert (project / "results/tiny/cpu/tiny.csv").read_bytes() == before


def test_prompts_file_is_an_input(project: Path) -> None:
    prompts = project / "models/prompts.txt"
    prompts.write_text("a man is eating food\n\nthe girl is carrying a baby\n", encoding="utf-8")
    edit(project / "models/tiny.yaml", "  input_tokens: 8\n", "  input_tokens: 8\n  prompts: prompts.txt\n")
    assert build(project).executed == {"bench:tiny"}
    prompts.write_text("a monkey is playing drums\n", encoding="utf-8")
    assert build(project).executed == {"bench:tiny"}
    assert build(project).executed == set()


def test_failed_tool_leaves_no_process_and_keeps_the_previous_results(project: Path, tmp_path: Path) -> None:
    previous = (project / "results/tiny/cpu/tiny.csv").read_bytes()
    edit(project / "models/tiny.yaml", "concurrency: [2]", "concurrency: [2]\n  tool: perf_analyzer")
    failing = doit_env({"FAKE_TOOL_EXIT": "3"}, path_prefix=FAKES)
    result = run_doit(project, "build:tiny", "target=cpu", env=failing)
    assert result.rc == 1
    errors = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1
    assert "perf_analyzer failed with exit code 3" in errors[0], errors
    assert processes_in(project) == []
    assert (project / "results/tiny/cpu/tiny.csv").read_bytes() == previous

    argv_log = tmp_path / "argv.jsonl"
    result = build(project, env=doit_env({"FAKE_TOOL_ARGV": str(argv_log)}, path_prefix=FAKES))
    assert result.executed == {"bench:tiny"}
    calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert len(calls) == 1
    argv = calls[0]
    assert "--concurrency-range" in argv
    assert argv[argv.index("--concurrency-range") + 1] == "2:2"
    header, rows = read_csv(project / "results/tiny/cpu/tiny.csv")
    assert header == list(metrics.PA_COLUMNS + metrics.CPU_COLUMNS)
    assert [r["Concurrency"] for r in rows] == ["2"]
    assert number(rows[0], metrics.SERVER_CPU) >= 0  # measured around the tool's run
    assert read_json(project / "results/tiny/cpu/tiny.json")["tool"] == "perf_analyzer"
    assert processes_in(project) == []


def test_missing_tool_is_one_line(project: Path) -> None:
    edit(project / "models/tiny.yaml", "concurrency: [2]", "concurrency: [1]")  # outdated again
    env = doit_env()
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != FAKES)
    result = run_doit(project, "build:tiny", "target=cpu", env=env)
    assert result.rc == 1
    assert "ERROR: bench:tiny: bench.tool: perf_analyzer is not on PATH" in result.stdout + result.stderr
    assert processes_in(project) == []


def test_default_tool_is_perf_analyzer_on_path_else_builtin(project: Path, tmp_path: Path) -> None:
    edit(project / "models/tiny.yaml", "  tool: perf_analyzer\n", "")  # bench.tool: auto
    argv_log = tmp_path / "argv.jsonl"
    result = build(project, env=doit_env({"FAKE_TOOL_ARGV": str(argv_log)}, path_prefix=FAKES))
    assert result.executed == {"bench:tiny"}
    assert len(argv_log.read_text().splitlines()) == 1
    doc = read_json(project / "results/tiny/cpu/tiny.json")
    assert doc["tool"] == "perf_analyzer"
    env = doit_env()
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != FAKES)
    # Without perf_analyzer the tool, and so the stage's params, change: the benchmark reruns.
    assert build(project, env=env).executed == {"bench:tiny"}
    doc = read_json(project / "results/tiny/cpu/tiny.json")
    assert doc["tool"] == "builtin"
    assert isinstance(doc["bench"], dict)
    assert doc["bench"]["tool"] == "builtin"
    assert build(project, env=env).executed == set()
    assert processes_in(project) == []


def test_ctrl_c_during_measurement_stops_everything(project: Path) -> None:
    edit(project / "models/tiny.yaml", "measurement_interval_ms: 300", "measurement_interval_ms: 5000")
    proc = subprocess.Popen(
        doit_argv("build:tiny", "target=cpu"), cwd=project, env=doit_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = project / "build/tiny/logs/bench-tritonserver.log"
    start = log.stat().st_size if log.exists() else 0
    try:
        deadline = time.monotonic() + 120
        # Ready, warmed up and measuring: the server has logged its start and requests are flowing.
        while not (log.exists() and "Started GRPCInferenceService" in log.read_text(errors="replace")[start:]):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(2.0)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = communicate_or_kill(proc, 120)
    assert proc.returncode != 0, out + err
    assert processes_in(project) == []
    assert not list((project / "build/tiny").glob(".bench.tmp-*"))


# ------------------------------------------------------------------------------- LLM

# Appended to the conformance kit's LLM model file, whose last block is triton.
DECOUPLED_BENCH = """\
  decoupled: true
bench:
  concurrency: [1, 2]
  measurement_interval_ms: 400
  stability_percentage: 50
  max_trials: 4
  warmup_requests: 2
  num_prompts: 8
  input_tokens: 10
  output_tokens: 6
"""
T5_BENCH_YAML = LLM_YAML.format(name="t5b", family="t5", path="{path}") + DECOUPLED_BENCH


def test_llm_csv_has_genai_perf_metrics_from_streamed_tokens(tmp_path: Path) -> None:
    checkpoint = build_tiny_t5(tmp_path / "t5", variant="flan")
    root = copy_project(tmp_path / "p", {"t5b": T5_BENCH_YAML.format(path=checkpoint)})
    result = run_doit(root, "build:t5b", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    assert "bench:t5b" in result.executed
    header, rows = read_csv(root / "results/t5b/cpu/t5b.csv")
    assert header == list(metrics.PA_COLUMNS + metrics.LLM_COLUMNS + metrics.CPU_COLUMNS)
    assert [int(r["Concurrency"]) for r in rows] == [1, 2]
    for row in rows:
        assert all(row[c] != "" for c in header), row
        assert number(row, "Inferences/Second") > 0
        assert number(row, "Output Token Throughput (tokens/sec)") > 0
        ttft, latency = number(row, "Time To First Token (ms) avg"), number(row, "Request Latency (ms) avg")
        assert 0 < ttft <= latency
        assert number(row, "Time To First Token (ms) p99") <= number(row, "Request Latency (ms) p99")
        assert 1 <= number(row, "Output Sequence Length (tokens) p99") <= 6
        assert number(row, "Input Sequence Length (tokens) avg") == pytest.approx(10, abs=2)
        # Request latency in ms and the perf_analyzer latency in µs describe the same requests.
        assert number(row, "Request Latency (ms) avg") * 1000 == pytest.approx(number(row, "Avg latency"), abs=1)
    doc = read_json(root / "results/t5b/cpu/t5b.json")
    assert doc["served_model"] == "ensemble"
    assert doc["streaming"] is True
    assert processes_in(root) == []
    # The same benchmark through genai-perf (a test double here): only bench reruns and the tool's
    # CSV is normalised into the same columns.
    argv_log = tmp_path / "argv.jsonl"
    yaml_path = root / "models/t5b.yaml"
    yaml_path.write_text(yaml_path.read_text() + "  tool: genai-perf\n")
    env = doit_env({"FAKE_TOOL_ARGV": str(argv_log)}, path_prefix=FAKES)
    again = run_doit(root, "build:t5b", "target=cpu", env=env)
    assert again.rc == 0, again.stdout + again.stderr
    assert again.executed == {"bench:t5b"}
    calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert [call[call.index("--concurrency") + 1] for call in calls] == ["1", "2"]
    assert all("--streaming" in call for call in calls)
    tokenizer = Path(calls[0][calls[0].index("--tokenizer") + 1])
    assert tokenizer == (root / "build/t5b/repo/cpu/preprocessing/1/tokenizer").resolve()  # the benchmarked tree
    header, rows = read_csv(root / "results/t5b/cpu/t5b.csv")
    assert header == list(metrics.PA_COLUMNS + metrics.LLM_COLUMNS + metrics.CPU_COLUMNS)
    assert [int(r["Concurrency"]) for r in rows] == [1, 2]
    for row in rows:
        assert number(row, "Time To First Token (ms) avg") <= number(row, "Request Latency (ms) avg")
        assert row["Client Send"] == ""  # genai-perf does not report it: empty, not zero
    assert processes_in(root) == []
