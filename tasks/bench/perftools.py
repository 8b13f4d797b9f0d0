"""NVIDIA's ``perf_analyzer`` and ``genai-perf`` as benchmark back ends.

Each call measures one concurrency level with the tool found on ``PATH`` (the Triton SDK image
ships both) and turns the tool's CSV into a :data:`tasks.bench.metrics.Row`.  The tools' CSV headers
change with the model, the server and the tool version, so the parsers go by column and row
names, never by position, and leave out what the tool did not report (``None``).

A tool runs in its own session and process group with its output appended to a log.  Whatever
ends the call (success, failure, timeout, Ctrl-C), the whole group is gone when it returns:
``genai-perf`` runs ``perf_analyzer`` as a child, which must not keep loading the server.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.bench import metrics, workload
from tasks.console import progress
from tasks.core import interrupts
from tasks.core.errors import UserError
from tasks.triton.processes import exit_status, group_pids

log = logging.getLogger(__name__)

PERF_ANALYZER = "perf_analyzer"
GENAI_PERF = "genai-perf"
TOOLS = (PERF_ANALYZER, GENAI_PERF)
SDK_IMAGE = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk"
WHERE = "bench.tool"

PA_CSV_NAME = "perf_analyzer.csv"
GENAI_ARTIFACT_DIR = "genai-perf-artifacts"
GENAI_EXPORT_STEM = "profile_export"
GENAI_PROMPTS_NAME = "genai-perf-prompts.jsonl"

TAIL_LINES = 15
_POLL_S = 0.05
# How long a tool gets to exit after SIGTERM before the group is killed outright.
_TERM_GRACE_S = 3.0
_KILL_WAIT_S = 5.0
# genai-perf's stats table: "Metric,avg,min,max,p99,...", its scalar table: "Metric,Value".
_METRIC = "Metric"
_VALUE = "Value"
_MISSING = ("", "N/A")


@dataclass(frozen=True)
class ToolRun:
    """One concurrency level to measure with an external tool."""

    model: str
    grpc_url: str
    concurrency: int
    measurement_interval_ms: int
    stability_percentage: float
    max_trials: int
    streaming: bool
    work_dir: Path
    log_path: Path


def find_tool(name: str) -> Path:
    """The ``perf_analyzer`` or ``genai-perf`` executable on ``PATH``."""
    if name not in TOOLS:
        raise UserError(WHERE, f"unknown tool {name!r}; expected one of {', '.join(TOOLS)}")
    found = shutil.which(name)
    if found is None:
        raise UserError(WHERE, f"{name} is not on PATH; it ships in the Triton SDK image {SDK_IMAGE} (or set bench.tool: builtin)")
    return Path(found)


def default_timeout_s(run: ToolRun) -> float:
    """Three times the longest measurement the settings allow, plus time to start and warm up."""
    return (run.max_trials + 2) * run.measurement_interval_ms / 1000.0 * 3 + 300.0


# ------------------------------------------------------------------------ input data


def _content(array: np.ndarray[Any, Any]) -> list[object]:
    flat = array.ravel()
    if array.dtype.kind in "OSU":
        return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in flat]
    values: list[object] = flat.tolist()
    return values


def write_input_data(path: Path, requests: Sequence[Mapping[str, np.ndarray[Any, Any]]]) -> None:
    """Write perf_analyzer's ``--input-data`` JSON: one entry per request, tensors without the batch dimension.

    Byte strings become text because the JSON format has no bytes type; perf_analyzer encodes
    the strings again for BYTES inputs.
    """
    if not requests:
        msg = "perf_analyzer input data needs at least one request"
        raise ValueError(msg)
    data = [
        {name: {"content": _content(np.asarray(array)), "shape": list(np.shape(array))} for name, array in request.items()}
        for request in requests
    ]
    path.write_text(json.dumps({"data": data}), encoding="utf-8")


def write_genai_prompts(source: Path, dest: Path) -> int:
    """Turn a one-prompt-per-line text file into genai-perf's JSONL input file; return the prompt count."""
    prompts = workload.read_prompts(source, "")
    dest.write_text("".join(json.dumps({"text": text}) + "\n" for text in prompts), encoding="utf-8")
    return len(prompts)


# ----------------------------------------------------------------------------- argv


def _absolute(path: Path) -> str:
    # The tool runs in work_dir, where a path relative to our cwd would point elsewhere.
    return str(path.absolute())


def perf_analyzer_argv(binary: Path, run: ToolRun, *, batch_size: int, input_data: Path, csv_name: str) -> list[str]:
    """perf_analyzer's command line for one concurrency level; *csv_name* is a bare name in ``work_dir``.

    A bare name matters: perf_analyzer names an ensemble's per-model CSVs ``<model>_v<n>.<csv_name>``,
    which only works when the name holds no directory.
    """
    if Path(csv_name).name != csv_name:
        msg = f"perf_analyzer's CSV must be a bare file name, not {csv_name!r}"
        raise ValueError(msg)
    argv = [
        str(binary),
        "-m",
        run.model,
        "-u",
        run.grpc_url,
        "-i",
        "grpc",
        "--concurrency-range",
        f"{run.concurrency}:{run.concurrency}",
        "-b",
        str(batch_size),
        "--measurement-interval",
        str(run.measurement_interval_ms),
        "--stability-percentage",
        f"{run.stability_percentage:g}",
        "--max-trials",
        str(run.max_trials),
        "-f",
        csv_name,
        "--verbose-csv",
        "--input-data",
        _absolute(input_data),
    ]
    if run.streaming:
        argv.append("--streaming")
    return argv


def genai_prompts_path(run: ToolRun) -> Path:
    """Where :func:`run_genai_perf` writes the converted prompts file."""
    return run.work_dir / GENAI_PROMPTS_NAME


def _genai_inputs(run: ToolRun, input_tokens: int, num_prompts: int, prompts_file: Path | None) -> list[str]:
    if prompts_file is not None:
        return ["--input-file", _absolute(genai_prompts_path(run))]
    return [
        "--synthetic-input-tokens-mean",
        str(input_tokens),
        "--synthetic-input-tokens-stddev",
        "0",
        "--num-dataset-entries",
        str(num_prompts),
    ]


def genai_perf_argv(
    binary: Path,
    run: ToolRun,
    *,
    tokenizer_dir: Path,
    input_tokens: int,
    output_tokens: int,
    num_prompts: int,
    seed: int,
    prompts_file: Path | None,
    ignore_eos: bool,
) -> list[str]:
    """``genai-perf profile``'s command line for one concurrency level.

    With *prompts_file*, genai-perf reads the JSONL copy at :func:`genai_prompts_path` (written
    by :func:`run_genai_perf`) instead of drawing synthetic prompts.
    """
    argv = [
        str(binary),
        "profile",
        "-m",
        run.model,
        "--endpoint-type",
        "kserve",
        "--backend",
        "tensorrtllm",
        "-u",
        run.grpc_url,
        "--tokenizer",
        _absolute(tokenizer_dir),
        "--concurrency",
        str(run.concurrency),
        "--measurement-interval",
        str(run.measurement_interval_ms),
        "--stability-percentage",
        f"{run.stability_percentage:g}",
        *_genai_inputs(run, input_tokens, num_prompts, prompts_file),
        "--output-tokens-mean",
        str(output_tokens),
        "--output-tokens-stddev",
        "0",
        "--random-seed",
        str(seed),
        "--artifact-dir",
        _absolute(run.work_dir / GENAI_ARTIFACT_DIR),
        "--profile-export-file",
        f"{GENAI_EXPORT_STEM}.json",
    ]
    if run.streaming:
        argv.append("--streaming")
    if ignore_eos:
        # TRT-LLM stops at the end token unless asked for at least this many tokens.
        argv += ["--extra-inputs", f"min_tokens:{output_tokens}"]
    return argv


# -------------------------------------------------------------------------- parsing


def _number(cell: str | None, what: str) -> float | None:
    text = (cell or "").strip().replace(",", "")
    if text in _MISSING:
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(WHERE, f"unexpected value {cell!r} for {what} in the tool's CSV") from None


def _csv_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text))]


def _pa_row(header: list[str], cells: list[str]) -> metrics.Row:
    by_name = dict(zip(header, cells, strict=False))
    return {column: _number(by_name.get(column), column) for column in metrics.PA_COLUMNS}


def parse_perf_analyzer_csv(text: str) -> list[metrics.Row]:
    """perf_analyzer's ``-f`` CSV as rows keyed by :data:`metrics.PA_COLUMNS`, sorted by concurrency.

    Columns the header lacks (no server statistics, no ``--verbose-csv``) are None; columns we do
    not use (``Response Throughput``, cache hits, GPU metrics) are ignored.
    """
    rows = [row for row in _csv_rows(text) if any(row)]
    if not rows:
        raise UserError(WHERE, "perf_analyzer wrote an empty CSV")
    header = rows[0]
    if header[0] == "Request Rate":
        raise UserError(WHERE, "perf_analyzer's CSV is from request-rate mode; only concurrency mode is supported")
    if header[0] != metrics.CONCURRENCY:
        raise UserError(WHERE, f"perf_analyzer's CSV starts with {header[0]!r}, expected {metrics.CONCURRENCY!r}")
    parsed = [_pa_row(header, cells) for cells in rows[1:]]
    # perf_analyzer orders rows by throughput.
    return sorted(parsed, key=lambda row: row[metrics.CONCURRENCY] or 0.0)


@dataclass(frozen=True)
class _GenaiTables:
    stats: dict[str, dict[str, str]]
    values: dict[str, str]

    def stat(self, metric: str, stat: str) -> float | None:
        return _number(self.stats.get(metric, {}).get(stat), f"{metric} {stat}")

    def value(self, metric: str) -> float | None:
        return _number(self.values.get(metric), metric)


def _genai_tables(text: str) -> _GenaiTables:
    stats: dict[str, dict[str, str]] = {}
    values: dict[str, str] = {}
    header: list[str] = []
    for row in _csv_rows(text):
        if not any(row):
            header = []
        elif row[0] == _METRIC:
            header = row
        elif header[1:2] == [_VALUE]:
            values[row[0]] = row[1] if len(row) > 1 else ""
        elif header:
            stats[row[0]] = dict(zip(header[1:], row[1:], strict=False))
    if not stats and not values:
        raise UserError(WHERE, "genai-perf's CSV holds no 'Metric' table")
    return _GenaiTables(stats, values)


def _pa_columns_from_genai(tables: _GenaiTables) -> metrics.Row:
    row: metrics.Row = dict.fromkeys(metrics.PA_COLUMNS)
    row[metrics.THROUGHPUT] = tables.value(metrics.REQUEST_THROUGHPUT)
    latency = {stat: tables.stat(metrics.REQUEST_LATENCY, stat) for stat in ("avg", *(f"p{p}" for p in metrics.PERCENTILES))}
    row[metrics.AVG_LATENCY] = _ms_to_us(latency["avg"])
    for p in metrics.PERCENTILES:
        row[metrics.percentile_column(p)] = _ms_to_us(latency[f"p{p}"])
    return row


def _ms_to_us(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def parse_genai_perf_csv(text: str) -> metrics.Row:
    """genai-perf's ``*_genai_perf.csv`` as a row with every column of ``metrics.columns(llm=True)``.

    The LLM columns come straight from the tables; of perf_analyzer's columns, throughput is the
    request throughput and the latencies are the request latencies in microseconds.  Concurrency,
    client send/recv and the server columns are not in the file and stay None.
    """
    tables = _genai_tables(text)
    row = _pa_columns_from_genai(tables)
    for metric in metrics.LLM_DISTRIBUTIONS:
        for stat in metrics.LLM_STATS:
            row[metrics.llm_column(metric, stat)] = tables.stat(metric, stat)
    row[metrics.OUTPUT_TOKEN_THROUGHPUT] = tables.value(metrics.OUTPUT_TOKEN_THROUGHPUT)
    row[metrics.REQUEST_THROUGHPUT] = tables.value(metrics.REQUEST_THROUGHPUT)
    if all(value is None for value in row.values()):
        raise UserError(WHERE, "genai-perf's CSV has none of the expected metrics (request latency, throughput)")
    return row


# ------------------------------------------------------------------------ processes


def _wait_exit(pid: int, timeout_s: float, *, interruptible: bool = False) -> int | None:
    deadline = time.monotonic() + timeout_s
    while (status := exit_status(pid)) is None:
        if time.monotonic() >= deadline:
            return None
        if interruptible:
            interrupts.raise_if_interrupted()
        time.sleep(_POLL_S)
    return status


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the tool and everything it started, then reap it."""
    if exit_status(proc.pid) is None:
        _signal_group(proc.pid, signal.SIGTERM)
        _wait_exit(proc.pid, _TERM_GRACE_S)
    # The leader is a zombie or still running here, so the group id is still the tool's.
    _signal_group(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_WAIT_S
    while (left := group_pids(proc.pid)) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    if left:
        log.warning("processes %s of %s survived SIGKILL", left, proc.args)
    proc.wait()


def _log_tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])


def _with_tail(message: str, tail: str) -> str:
    return f"{message}\n{tail}" if tail else message


def _launch(tool: str, argv: list[str], run: ToolRun, env: Mapping[str, str] | None) -> tuple[subprocess.Popen[bytes], int]:
    run.log_path.parent.mkdir(parents=True, exist_ok=True)
    with run.log_path.open("a", encoding="utf-8") as log_file:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log_file.write(f"# {stamp} {tool} in {run.work_dir}: {shlex.join(argv)}\n")
        log_file.flush()
        offset = run.log_path.stat().st_size
        try:
            proc = subprocess.Popen(
                argv,
                cwd=run.work_dir,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise UserError(WHERE, f"cannot run {argv[0]}: {exc}") from None
    return proc, offset


def run_tool(tool: str, argv: list[str], run: ToolRun, *, env: Mapping[str, str] | None = None, timeout_s: float) -> None:
    """Run *argv* in ``run.work_dir`` and its own process group; raise UserError unless it exits 0.

    The group is killed before this returns or raises, whatever the reason.
    """
    log.debug("running %s", argv)
    proc, offset = _launch(tool, argv, run, env)
    try:
        with progress.watch(f"bench: {tool} at concurrency {run.concurrency}", progress.log_tail(run.log_path)):
            status = _wait_exit(proc.pid, timeout_s, interruptible=True)
    finally:
        _end_group(proc)
    where = f"at concurrency {run.concurrency} (log: {run.log_path})"
    if status is None:
        message = f"{tool} did not finish within {timeout_s:g} s {where}; it was stopped"
        raise UserError(WHERE, _with_tail(message, _log_tail(run.log_path, offset)))
    if status != 0:
        ended = f"was killed by signal {-status}" if status < 0 else f"failed with exit code {status}"
        raise UserError(WHERE, _with_tail(f"{tool} {ended} {where}", _log_tail(run.log_path, offset)))


# ------------------------------------------------------------------------------ runs


def _read_output(tool: str, path: Path, run: ToolRun) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise UserError(WHERE, f"{tool} exited 0 but wrote no {path} (log: {run.log_path})") from None


def run_perf_analyzer(binary: Path, run: ToolRun, *, batch_size: int, input_data: Path, timeout_s: float | None = None) -> metrics.Row:
    """Measure ``run.concurrency`` with perf_analyzer; the row is keyed by :data:`metrics.PA_COLUMNS` (µs)."""
    csv_path = run.work_dir / PA_CSV_NAME
    # A file left by an earlier run must not pass for this run's result.
    csv_path.unlink(missing_ok=True)
    argv = perf_analyzer_argv(binary, run, batch_size=batch_size, input_data=input_data, csv_name=PA_CSV_NAME)
    run_tool(PERF_ANALYZER, argv, run, timeout_s=default_timeout_s(run) if timeout_s is None else timeout_s)
    rows = parse_perf_analyzer_csv(_read_output(PERF_ANALYZER, csv_path, run))
    for row in rows:
        if row[metrics.CONCURRENCY] == run.concurrency:
            return row
    raise UserError(WHERE, f"{csv_path} has no row for concurrency {run.concurrency}")


def _find_genai_csv(artifacts: Path, run: ToolRun) -> Path:
    # genai-perf picks the subfolder name itself (model, endpoint, concurrency).
    name = f"{GENAI_EXPORT_STEM}_genai_perf.csv"
    found = sorted(artifacts.rglob(name), key=lambda path: path.stat().st_mtime)
    if not found:
        raise UserError(WHERE, f"genai-perf exited 0 but wrote no {artifacts}/**/{name} (log: {run.log_path})")
    return found[-1]


def run_genai_perf(
    binary: Path,
    run: ToolRun,
    *,
    tokenizer_dir: Path,
    input_tokens: int,
    output_tokens: int,
    num_prompts: int,
    seed: int,
    prompts_file: Path | None,
    ignore_eos: bool,
    timeout_s: float | None = None,
) -> metrics.Row:
    """Measure ``run.concurrency`` with genai-perf; see :func:`parse_genai_perf_csv` for the row."""
    artifacts = run.work_dir / GENAI_ARTIFACT_DIR
    shutil.rmtree(artifacts, ignore_errors=True)
    if prompts_file is not None:
        write_genai_prompts(prompts_file, genai_prompts_path(run))
    argv = genai_perf_argv(
        binary,
        run,
        tokenizer_dir=tokenizer_dir,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        num_prompts=num_prompts,
        seed=seed,
        prompts_file=prompts_file,
        ignore_eos=ignore_eos,
    )
    # The tokenizer is local; without this genai-perf still asks the hub and fails offline.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run_tool(GENAI_PERF, argv, run, env=env, timeout_s=default_timeout_s(run) if timeout_s is None else timeout_s)
    row = parse_genai_perf_csv(_read_output(GENAI_PERF, _find_genai_csv(artifacts, run), run))
    row[metrics.CONCURRENCY] = float(run.concurrency)
    return row
