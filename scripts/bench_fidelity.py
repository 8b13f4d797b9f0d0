# ruff: noqa: T201, INP001 - a measurement script run by path: its printed lines are the report
"""The built-in load generator against the real perf_analyzer, on one server, interleaved.

    python scripts/bench_fidelity.py [--repo repos/minilm] [--perf-analyzer PATH] [--busy]
                                     [--concurrency 1 4 8] [--rounds 2] [--interval-ms 2000]

Both tools measure the same served model with the same requests and the same window rules
(``--interval-ms`` windows, ±``--stability`` %, up to ``--max-trials``).  At each concurrency they take turns
(perf_analyzer, builtin, builtin, perf_analyzer, ... for ``--rounds``) so a change in the machine's
load hits both alike; the report gives each tool's mean infer/s, the ratio builtin / perf_analyzer,
and the client CPU each tool spent per request.  ``--busy`` keeps one core busy with a spinning
process for the whole run, as a loaded machine would.

``--repo`` is an encoder repository built by ``doit build:<m>`` (its ``<m>`` ensemble takes
``text``); without it, the trivial python-backend ``echo`` model of ``bench_generator.py`` is served.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# This checkout's package, not whichever one the environment would import.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_generator import DATA, MODEL, write_repo

from tasks.bench import benchrun, loadgen, perfrun, perftools, workload
from tasks.core.errors import UserError
from tasks.triton.launcher import TritonServer

SPIN = "while True: pass"
PROMPTS = {"num_prompts": 20, "input_tokens": 32, "seed": 0}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _requests(repo: Path | None) -> tuple[str, list[dict[str, Any]]]:
    """The served model and its requests (with the batch dimension)."""
    if repo is None:
        return MODEL, [{"INPUT0": DATA}]
    name = repo.name
    tokenizer = workload.load_tokenizer(benchrun.tokenizer_dir(repo, "encoder", name))
    prompts = workload.prompts(tokenizer, PROMPTS, None, name)
    return name, [workload.encoder_inputs(p, 1) for p in prompts]


class Bench:
    """One served model measured by either tool."""

    def __init__(self, url: str, model: str, requests: list[dict[str, Any]], args: argparse.Namespace, work: Path) -> None:
        self.url, self.model, self.args, self.work = url, model, args, work
        self.client = loadgen.Client(url, model, timeout_s=60)
        self.client.payloads = [loadgen.Payload.from_arrays(r) for r in requests]
        self.input_data = work / "input_data.json"
        perftools.write_input_data(self.input_data, [{k: v[0] for k, v in r.items()} for r in requests])
        self.settings = loadgen.Settings(args.interval_ms / 1000.0, args.stability, args.max_trials)

    def builtin(self, concurrency: int) -> tuple[float, float]:
        """infer/s and client CPU ms per request, the CPU taken over the whole level as for perf_analyzer."""
        before, start = time.process_time(), time.perf_counter()
        level = loadgen.measure(self.client, concurrency, self.settings, len(self.client.payloads))
        cpu, wall = time.process_time() - before, time.perf_counter() - start
        throughput = len(level.samples) / (level.duration_ns / 1e9)
        return throughput, cpu / wall / throughput * 1e3

    def perf_analyzer(self, concurrency: int) -> tuple[float, float]:
        level_dir = self.work / f"pa-{concurrency}"
        level_dir.mkdir(exist_ok=True)
        run = perfrun.ToolRun(
            self.model,
            self.url,
            concurrency,
            self.args.interval_ms,
            self.args.stability,
            self.args.max_trials,
            False,  # noqa: FBT003 - not streamed
            level_dir,
            self.work / "pa.log",
        )
        before, start = _children_cpu_s(), time.perf_counter()
        row = perftools.run_perf_analyzer(self.args.perf_analyzer, run, batch_size=1, input_data=self.input_data)
        cpu, wall = _children_cpu_s() - before, time.perf_counter() - start
        throughput = float(row["Inferences/Second"] or 0.0)
        # Its CPU spans its whole run (start-up and all windows): per request at the reported rate.
        return throughput, cpu / wall / throughput * 1e3 if throughput else float("nan")


@contextmanager
def _busy(on: bool) -> Iterator[None]:  # noqa: FBT001
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if on else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def _level(bench: Bench, concurrency: int, rounds: int) -> Mapping[str, list[tuple[float, float]]]:
    got: dict[str, list[tuple[float, float]]] = {"pa": [], "builtin": []}
    for round_ in range(rounds):
        order = ("pa", "builtin") if round_ % 2 == 0 else ("builtin", "pa")
        for name in order:
            try:
                got[name].append(bench.perf_analyzer(concurrency) if name == "pa" else bench.builtin(concurrency))
            except UserError as exc:
                # perf_analyzer gives up on a level that never stabilised: that turn is left out.
                print(f"  {name} at concurrency {concurrency}: {str(exc).splitlines()[0]}", flush=True)
    return got


def _mean(values: list[tuple[float, float]], i: int) -> float:
    return sum(v[i] for v in values) / len(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=None, help="an encoder repository (default: a trivial echo model)")
    parser.add_argument("--perf-analyzer", type=Path, default=None, help="the binary (default: perf_analyzer on PATH)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--stability", type=float, default=10.0, help="stability percentage (widen it on a noisy machine)")
    parser.add_argument("--keep", type=Path, default=None, help="a folder for the logs and tool files, kept afterwards")
    parser.add_argument("--busy", action="store_true", help="keep one core busy with a spinning process")
    args = parser.parse_args()
    if args.perf_analyzer is None:
        found = shutil.which("perf_analyzer")
        if found is None:
            parser.error("perf_analyzer is not on PATH; give --perf-analyzer")
        args.perf_analyzer = Path(found)
    model, requests = _requests(args.repo)
    with tempfile.TemporaryDirectory(prefix="bench-fidelity-") as tmp:
        work = Path(tmp)
        if args.keep is not None:
            work = args.keep
            work.mkdir(parents=True, exist_ok=True)
        repo = args.repo if args.repo is not None else write_repo(work / "repo")
        with TritonServer(repo, "cpu", work / "tritonserver.log") as server, _busy(args.busy):
            bench = Bench(server.grpc_url, model, requests, args, work)
            loadgen.warm_up(bench.client, 10)
            print(f"model {model}, busy core: {args.busy}, load average before: {os.getloadavg()[0]:.2f}")
            print(f"{'concurrency':>11} {'pa infer/s':>11} {'builtin infer/s':>16} {'ratio':>6} {'pa cpu ms/req':>14} {'builtin':>8}")
            for concurrency in args.concurrency:
                got = _level(bench, concurrency, args.rounds)
                pa, builtin = _mean(got["pa"], 0), _mean(got["builtin"], 0)
                line = f"{concurrency:>11} {pa:>11.1f} {builtin:>16.1f} {builtin / pa:>6.2f}"
                print(f"{line} {_mean(got['pa'], 1):>14.3f} {_mean(got['builtin'], 1):>8.3f}", flush=True)
            bench.client.close()
            print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
