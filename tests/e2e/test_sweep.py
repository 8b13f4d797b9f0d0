"""sweep on target cpu with the real Triton: two variants of a bench sweep are benchmarked and compared."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tasks.triton.launcher import TritonServer
from tests.helpers import TINY_YAML, copy_project, edit, read_json, run_doit

BERT_SWEEP = """\
bench:
  concurrency: [1, 2]
  measurement_interval_ms: 200
  stability_percentage: 80
  max_trials: 3
  warmup_requests: 2
  num_prompts: 8
  input_tokens: 8
sweep:
  triton.max_queue_delay_us: [0, 2000]
compare:
  limits: {p99 latency: 60000000}
"""


def test_cpu_variants_are_benchmarked_and_compared(tiny_bert: Path, tmp_path: Path) -> None:
    text = TINY_YAML.format(path=tiny_bert) + BERT_SWEEP
    project = copy_project(tmp_path / "p", {"tiny": text})
    result = run_doit(project, "build:tiny", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    variants = ["tiny@max_queue_delay_us-0", "tiny@max_queue_delay_us-2000"]
    # Only triton.* is swept: export and the engine are shared; each variant has its own config, repo and bench.
    shared = {"fetch:tiny", "export:tiny", "engine:tiny", "compare:tiny"}
    assert result.executed == shared | {f"{s}:{v}" for v in variants for s in ("config", "repo", "bench")}
    results = project / "results/tiny/cpu"
    rows = list(csv.DictReader((results / "summary.csv").open(encoding="utf-8")))
    assert [(r["Variant"], r["triton.max_queue_delay_us"], r["Concurrency"]) for r in rows] == [
        (v, v.rsplit("-", 1)[1], c) for v in variants for c in ("1", "2")
    ]
    for v in variants:
        own = list(csv.DictReader((results / f"{v}.csv").open(encoding="utf-8")))
        assert [{k: r[k] for k in own[0]} for r in rows if r["Variant"] == v] == own
    best = read_json(results / "best.json")["best"]
    assert isinstance(best, dict)
    top = max(rows, key=lambda r: float(r["Inferences/Second"]))
    assert (best["variant"], best["concurrency"]) == (top["Variant"], float(top["Concurrency"]))
    assert (results / "summary.png").read_bytes().startswith(b"\x89PNG")
    # Promoted, the variant's tree (empty ensemble version folders included) serves as repos/tiny.
    promoted = run_doit(project, f"promote:{best['variant']}", "target=cpu")
    assert promoted.executed == {f"promote:{best['variant']}"}, promoted.stdout + promoted.stderr
    assert tree(project / "repos/tiny") == tree(project / "repos" / str(best["variant"])) | {"promoted.json"}
    with TritonServer(project / "repos/tiny", "cpu", tmp_path / "triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            text = grpcclient.InferInput("text", [1, 1], "BYTES")
            text.set_data_from_numpy(np.array([[b"a man is eating food"]], dtype=object))
            assert client.infer("tiny", [text]).as_numpy("embedding").shape[0] == 1
        finally:
            client.close()
    # The objective is compare's alone: a new bound re-runs compare and nothing else.
    edit(project / "models/tiny.yaml", "{p99 latency: 60000000}", "{p99 latency: 1}")
    again = run_doit(project, "build:tiny", "target=cpu")
    assert again.executed == {"compare:tiny"}
    assert read_json(results / "best.json")["best"] is None
    assert "compare:tiny: no variant has a row with Inferences/Second measured within p99 latency <= 1" in again.stderr


def tree(root: Path) -> set[str]:
    """Every file and folder under ``root``, relative."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}
