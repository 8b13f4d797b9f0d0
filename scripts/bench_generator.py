# ruff: noqa: T201, INP001 - a measurement script run by path: its printed lines are the report
"""The built-in load generator's own ceiling, next to a minimal tritonclient loop, in one run.

    python scripts/bench_generator.py [--seconds 6] [--concurrency 1 8 32] [--rounds 2]

A trivial python-backend ``echo`` model (16 float32 in, the same out) is served by the real
Triton of the cpu target, so the server does almost nothing and the clients' own costs show.
At each concurrency the two clients alternate (raw, generator, generator, raw, ... for
``--rounds``), each for ``--seconds``; the report gives each one's requests/s (sum of its
rounds' requests over their time) and the ratio generator / raw.

The raw loop is what a user would write: threads sharing one
``tritonclient.grpc.InferenceServerClient``, each calling ``infer`` in a loop.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tasks.bench import loadgen
from tasks.triton.launcher import TritonServer

MODEL = "echo"
CONFIG = """\
name: "echo"
backend: "python"
max_batch_size: 64
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { }
"""
MODEL_PY = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests
        ]
"""
DATA = np.arange(16, dtype=np.float32).reshape(1, 16)


def write_repo(root: Path) -> Path:
    model = root / MODEL
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_text(MODEL_PY)
    return root


def raw_loop(url: str, concurrency: int, seconds: float) -> tuple[int, float]:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    tensor.set_data_from_numpy(DATA)
    stop = threading.Event()
    counts = [0] * concurrency

    def work(slot: int) -> None:
        while not stop.is_set():
            client.infer(MODEL, [tensor])
            counts[slot] += 1

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    # Count what completed inside the interval, as the generator's windows do.
    done, elapsed = sum(counts), time.perf_counter() - start
    stop.set()
    for thread in threads:
        thread.join()
    client.close()
    return done, elapsed


def generator(url: str, concurrency: int, seconds: float) -> tuple[int, float]:
    with loadgen.Client(url, MODEL, timeout_s=30) as client:
        client.payloads = [loadgen.Payload.from_arrays({"INPUT0": DATA})]
        # Three fixed windows (a stability band nothing misses): the level's report spans them all.
        settings = loadgen.Settings(seconds / loadgen.STABLE_WINDOWS, 1e9, loadgen.STABLE_WINDOWS)
        level = loadgen.measure(client, concurrency, settings, 1)
    return len(level.samples), level.duration_ns / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-generator-") as tmp:
        repo = write_repo(Path(tmp) / "repo")
        with TritonServer(repo, "cpu", Path(tmp) / "tritonserver.log") as server:
            url = server.grpc_url
            raw_loop(url, 4, 1.0)  # warm both paths up before anything counts
            generator(url, 4, 1.5)
            print(f"{'concurrency':>11} {'raw req/s':>10} {'generator req/s':>16} {'ratio':>6}")
            for concurrency in args.concurrency:
                totals = {"raw": [0, 0.0], "gen": [0, 0.0]}
                for round_ in range(args.rounds):
                    order = ("raw", "gen") if round_ % 2 == 0 else ("gen", "raw")
                    for name in order:
                        run = raw_loop if name == "raw" else generator
                        done, elapsed = run(url, concurrency, args.seconds)
                        totals[name][0] += done
                        totals[name][1] += elapsed
                raw = totals["raw"][0] / totals["raw"][1]
                gen = totals["gen"][0] / totals["gen"][1]
                print(f"{concurrency:>11} {raw:>10.1f} {gen:>16.1f} {gen / raw:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
