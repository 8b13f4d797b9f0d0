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

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.bench import metrics, workload
from tasks.bench.perfcsv import parse_genai_perf_csv, parse_perf_analyzer_csv
from tasks.bench.perfrun import (
    GENAI_ARTIFACT_DIR,
    GENAI_EXPORT_STEM,
    GENAI_PERF,
    GENAI_PROMPTS_NAME,
    PA_CSV_NAME,
    PERF_ANALYZER,
    WHERE,
    ToolRun,
    default_timeout_s,
    run_tool,
)
from tasks.core.errors import UserError

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
