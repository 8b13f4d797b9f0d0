"""The bench stage's run: Triton on ``repos/<model>``, one measurement per ``bench.concurrency`` level.

The server is started through the launcher on free ports, warmed up, measured level by level
(built-in generator, or perf_analyzer / genai-perf when ``bench.tool`` asks for them) and
stopped, whatever happens; outputs are ``<variant>.csv``, ``.json`` and ``.png``, also copied to
``results/<model>/``.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.bench import cpuuse, loadgen, metrics, perfrun, perftools, results, serverstats, workload
from tasks.console import progress
from tasks.core import fsops, manifest
from tasks.core.errors import UserError
from tasks.core.stage import StageContext
from tasks.triton.launcher import TritonServer
from tasks.triton.ranks import Ranks

log = logging.getLogger("tasks")

TEXT_OUTPUT = "text_output"


def tokenizer_dir(repo: Path, kind: str, name: str) -> Path:
    """Where the repository keeps the tokenizer its preprocessing model uses."""
    if kind == "encoder":
        return repo / f"{name}_tokenizer" / "1"
    return repo / "preprocessing" / "1" / "tokenizer"


@dataclass(frozen=True)
class Run:
    """Everything a measurement needs, gathered once the server is up."""

    ctx: StageContext
    client: loadgen.Client
    served: loadgen.ServedModel
    prompts: list[workload.Prompt]
    tokenizer: Any
    streaming: bool
    server_pids: Callable[[], list[int]]

    @property
    def bench(self) -> Mapping[str, Any]:
        bench: Mapping[str, Any] = self.ctx.params["bench"]
        return bench

    @property
    def llm(self) -> bool:
        return bool(self.ctx.params["kind"] == "llm")

    @property
    def batch_size(self) -> int:
        return int(self.bench.get("batch_size", 1))


def _inputs(run: Run, prompt: workload.Prompt) -> dict[str, Any]:
    if run.llm:
        return workload.llm_inputs(prompt, run.bench, streaming=run.streaming)
    return workload.encoder_inputs(prompt, run.batch_size)


# --------------------------------------------------------------------------- builtin


def _builtin_row(run: Run, level: loadgen.Level) -> metrics.Row:
    samples = level.samples
    client = metrics.ClientSamples(
        level.duration_ns, [s.latency_ns for s in samples], [s.send_ns for s in samples], [s.recv_ns for s in samples], run.batch_size
    )
    server = serverstats.server_times(level.before, level.after, run.served.name, run.served.composing)
    row = metrics.latency_row(level.concurrency, client, server)
    if run.llm:
        tokens = metrics.TokenSamples(
            level.duration_ns,
            [s.latency_ns for s in samples],
            [s.first_ns - s.start_ns for s in samples] if run.streaming else None,
            # Streamed: one response per token, exact.  Otherwise the text is re-tokenized (genai-perf's way).
            [s.responses for s in samples] if run.streaming else workload.count_tokens(run.tokenizer, [s.text or "" for s in samples]),
            [run.prompts[s.prompt % len(run.prompts)].tokens for s in samples],
        )
        row.update(metrics.llm_row(tokens))
    row.update(cpuuse.usage_row(level.cpu_before, level.cpu_after, level.duration_ns / 1e9, len(samples)))
    return row


def _run_builtin(run: Run) -> tuple[list[metrics.Row], list[dict[str, Any]]]:
    bench = run.bench
    settings = loadgen.Settings(bench["measurement_interval_ms"] / 1000.0, bench["stability_percentage"], bench["max_trials"])
    rows: list[metrics.Row] = []
    levels: list[dict[str, Any]] = []
    for concurrency in bench["concurrency"]:
        what = f"bench:{run.ctx.params['variant']}: concurrency {concurrency}"
        with progress.watch(what, lambda: f"level {len(rows) + 1} of {len(bench['concurrency'])}"):
            level = loadgen.measure(run.client, concurrency, settings, len(run.prompts), run.server_pids)
        if not level.stable:
            log.warning(
                "bench:%s: concurrency %d not stable within %d windows of %d ms (±%g %%); reporting the last %d",
                run.ctx.params["variant"],
                concurrency,
                level.windows,
                bench["measurement_interval_ms"],
                bench["stability_percentage"],
                loadgen.STABLE_WINDOWS,
            )
        row = _builtin_row(run, level)
        _progress(run, row)
        rows.append(row)
        levels.append({"concurrency": concurrency, "windows": level.windows, "stable": level.stable, "requests": len(level.samples)})
    return rows, levels


def _progress(run: Run, row: metrics.Row) -> None:
    p99 = row.get(metrics.percentile_column(99))
    variant, concurrency = run.ctx.params["variant"], int(row[metrics.CONCURRENCY] or 0)
    log.info(
        "bench:%s: concurrency %d: %.1f infer/s, p99 %.2f ms", variant, concurrency, row[metrics.THROUGHPUT] or 0.0, (p99 or 0.0) / 1000.0
    )
    starved = cpuuse.starved(row)
    if starved is not None:
        log.warning("bench:%s: concurrency %d: %s; the server may have been short of CPU (results low)", variant, concurrency, starved)


# -------------------------------------------------------------------------- external


def _tool_run(run: Run, url: str, concurrency: int, work: Path) -> perfrun.ToolRun:
    bench = run.bench
    return perfrun.ToolRun(
        model=run.served.name,
        grpc_url=url,
        concurrency=concurrency,
        measurement_interval_ms=bench["measurement_interval_ms"],
        stability_percentage=bench["stability_percentage"],
        max_trials=bench["max_trials"],
        streaming=run.streaming,
        work_dir=work,
        log_path=run.ctx.log_path(f"bench-{bench['tool']}"),
    )


def _strip_batch(arrays: Mapping[str, Any]) -> dict[str, Any]:
    # perf_analyzer's input data leaves out the batch dimension; -b adds it back.
    return {name: array[0] for name, array in arrays.items()}


def _external_row(run: Run, binary: Path, tool: perfrun.ToolRun, prompts_file: Path | None) -> metrics.Row:
    bench = run.bench
    if bench["tool"] == "perf_analyzer":
        data = tool.work_dir / "input_data.json"
        perftools.write_input_data(data, [_strip_batch(_inputs(run, p)) for p in run.prompts])
        return perftools.run_perf_analyzer(binary, tool, batch_size=run.batch_size, input_data=data)
    before = run.client.stats()
    row = perftools.run_genai_perf(
        binary,
        tool,
        tokenizer_dir=tokenizer_dir(run.ctx.inputs["repo"], "llm", run.ctx.params["name"]),
        input_tokens=bench["input_tokens"],
        output_tokens=bench["output_tokens"],
        num_prompts=bench["num_prompts"],
        seed=bench["seed"],
        prompts_file=prompts_file,
        ignore_eos=bench["ignore_eos"],
    )
    # genai-perf reports no server-side split; Triton's counters over its run give it.
    server = serverstats.server_times(before, run.client.stats(), run.served.name, run.served.composing)
    if server is not None:
        row.update(server.as_row())
    return row


def _run_external(run: Run, url: str, prompts_file: Path | None) -> tuple[list[metrics.Row], list[dict[str, Any]]]:
    binary = perfrun.find_tool(run.bench["tool"])
    work = run.ctx.stage.log_dir / f"bench-{run.bench['tool']}"
    rows: list[metrics.Row] = []
    levels: list[dict[str, Any]] = []
    # The tool is a child process: its CPU shows once it has exited and been waited for.
    cpu = cpuuse.reader(run.server_pids, client=cpuuse.children_cpu_s)
    for concurrency in run.bench["concurrency"]:
        level_dir = work / f"concurrency{concurrency}"
        level_dir.mkdir(parents=True, exist_ok=True)
        before, start = cpu(), time.perf_counter()
        row = _external_row(run, binary, _tool_run(run, url, concurrency, level_dir), prompts_file)
        seconds = time.perf_counter() - start
        # Over the tool's whole run (start-up and every window): requests at the rate it reported.
        row.update(cpuuse.usage_row(before, cpu(), seconds, (row.get(metrics.THROUGHPUT) or 0.0) / run.batch_size * seconds))
        row[metrics.CONCURRENCY] = float(concurrency)
        _progress(run, row)
        rows.append(row)
        levels.append({"concurrency": concurrency, "tool": run.bench["tool"], "artifacts": str(level_dir)})
    return rows, levels


# ----------------------------------------------------------------------------- stage


def git_commit() -> dict[str, Any]:
    """The project's commit and whether the tree had local changes (unknown outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # noqa: S607 - git from PATH
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()  # noqa: S607
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def measured_engine(ctx: StageContext) -> Any:  # noqa: ANN401 - a JSON value
    """The engine settings the measured bytes were built with, from the engine stage's record (None: no engine)."""
    engine = ctx.stage.deps["repo"].deps.get("engine")
    record = fsops.read_json(engine.meta / manifest.RECORD) if engine is not None else None
    params = record.get("params") if isinstance(record, dict) else None
    return params.get("engine") if isinstance(params, dict) else None


def _metadata(ctx: StageContext, served: loadgen.ServedModel, streaming: bool) -> dict[str, Any]:  # noqa: FBT001
    params = ctx.params
    return {
        "model": params["name"],
        "variant": params["variant"],
        "served_model": served.name,
        "target": params["target"],
        "tool": params["bench"]["tool"],
        "streaming": streaming,
        "toolchain": {**params["toolchain"], "tritonserver": served.server_version},
        "engine": measured_engine(ctx),
        "bench": params["bench"],
        "git": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write(ctx: StageContext, metadata: dict[str, Any], rows: Sequence[metrics.Row], levels: Sequence[dict[str, Any]]) -> None:
    variant = ctx.params["variant"]
    llm = ctx.params["kind"] == "llm"
    ordered = sorted(rows, key=lambda r: r[metrics.CONCURRENCY] or 0)
    columns = (*metrics.columns(llm), *metrics.CPU_COLUMNS)
    results.write_csv(ctx.out / f"{variant}.csv", columns, ordered)
    results.write_json(ctx.out / f"{variant}.json", metadata, columns, ordered, levels)
    title = f"{variant}: model {metadata['served_model']}, target {ctx.params['target']}, {metadata['tool']}"
    results.write_plot(ctx.out / f"{variant}.png", title, ordered)


def _server_pids(server: TritonServer) -> list[int]:
    """The pids of tritonserver and its python-backend stubs: the server's CPU is theirs."""
    return [] if server.pid is None else [server.pid, *server.stub_pids()]


def _prompts_file(ctx: StageContext) -> Path | None:
    return ctx.stage.files[0] if ctx.params["bench"]["prompts"] is not None else None


def run(ctx: StageContext) -> None:
    """Measure every level of ``bench.concurrency`` on a fresh server and write the outputs into ``ctx.out``."""
    params = ctx.params
    bench, kind, name = params["bench"], params["kind"], params["name"]
    repo = ctx.inputs["repo"]
    tokenizer = workload.load_tokenizer(tokenizer_dir(repo, kind, name))
    prompts_file = _prompts_file(ctx)
    prompts = workload.prompts(tokenizer, bench, prompts_file, params["yaml"])
    served_name = bench["model"] if kind == "llm" else name
    server = TritonServer(repo, params["target"], ctx.log_path("bench-tritonserver"), ranks=Ranks.from_params(params["ranks"]))
    text_output = TEXT_OUTPUT if kind == "llm" else None
    log.info("bench:%s: starting Triton on %s", params["variant"], repo)
    with server, loadgen.Client(server.grpc_url, served_name, timeout_s=bench["request_timeout_s"], text_output=text_output) as client:
        served = client.describe()
        streaming = kind == "llm" and served.decoupled
        client.streaming = streaming
        run = Run(ctx, client, served, prompts, tokenizer, streaming, lambda: _server_pids(server))
        client.payloads = [loadgen.Payload.from_arrays(_inputs(run, p)) for p in prompts]
        loadgen.warm_up(client, bench["warmup_requests"])
        if bench["tool"] == "builtin":
            rows, levels = _run_builtin(run)
        else:
            rows, levels = _run_external(run, server.grpc_url, prompts_file)
    if not rows:
        raise UserError(f"bench:{name}", "no measurement")
    _write(ctx, _metadata(ctx, served, streaming), rows, levels)
    ctx.record["levels"] = levels
