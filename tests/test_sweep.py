"""sweep: variants sharing what they do not change, rebuilt one by one, compared and promoted explicitly.

Target trt with a fake trtllm-build (argv recorded) for the 2x2 engine sweep of the issue's
example; target cpu with the real Triton for benchmarks of two variants and their comparison.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tasks.core.stage import Stage, StageContext
from tasks.stages import compare
from tasks.triton.launcher import TritonServer
from tests.decoder_fixtures import build_tiny_decoder
from tests.helpers import FAKES, TINY_YAML, copy_project, doit_env, edit, read_json, run_doit

LLAMA = """\
name: tiny-llama
kind: llm
family: llama
source:
  path: {path}
convert:
  dtype: float32
engine:
  max_input_len: 48
  max_output_len: 16
triton:
  max_batch_size: 4
sweep:
  engine.max_batch_size: [4, 8]
  engine.max_num_tokens: [256, 512]
"""
M = "tiny-llama"


def variant(batch: int, tokens: int) -> str:
    return f"{M}@max_batch_size-{batch},max_num_tokens-{tokens}"


def per_variant(*variants: str) -> set[str]:
    return {f"{stage}:{v}" for v in variants for stage in ("engine", "config", "repo")}


def calls(log: Path) -> dict[str, list[str]]:
    """trtllm-build argv per variant, keyed by the variant folder its --output_dir is in."""
    out = {}
    for argv in map(json.loads, log.read_text().splitlines()):
        out[argv[argv.index("--output_dir") + 1].split("/")[1]] = argv
    return out


@pytest.fixture(scope="module")
def trt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("sweep-trt")
    checkpoint = build_tiny_decoder("llama", root / "ckpt")
    project = copy_project(root / "p", {M: LLAMA.format(path=checkpoint)})
    env = doit_env({"FAKE_TRTLLM_LOG": str(root / "argv.jsonl")}, path_prefix=FAKES)
    return project, env


def test_two_by_two_sweep_builds_four_variants_and_converts_once(trt: tuple[Path, dict[str, str]]) -> None:
    project, env = trt
    result = run_doit(project, f"build:{M}", env=env)
    assert result.rc == 0, result.stdout + result.stderr
    variants = [variant(b, t) for b in (4, 8) for t in (256, 512)]
    assert result.executed == {f"fetch:{M}", f"convert:{M}"} | per_variant(*variants)
    argv = calls(Path(env["FAKE_TRTLLM_LOG"]))
    assert sorted(argv) == sorted(variants)
    for name, call in argv.items():
        batch, tokens = (part.split("-")[1] for part in name.split("@")[1].split(","))
        assert call[:2] == ["--checkpoint_dir", f"build/{M}/convert"]
        assert call[call.index("--max_batch_size") + 1] == batch
        assert call[call.index("--max_num_tokens") + 1] == tokens
        assert (project / "repos" / name / "tensorrt_llm/1/engine/rank0.engine").is_file()
    assert not (project / "repos" / M).exists()  # a swept model's repos/<m> is only made by promote
    # One trtllm-build timing cache for the model: every build after the first starts from it.
    assert [p.name.split("-")[-1] for p in (project / f"build/{M}/timing-cache").iterdir()] == ["engine.cache"]
    reused = [read_json(project / f"build/{v}/engine/action.json")["timing_cache"]["engine"]["reused"] for v in variants]  # type: ignore[index]
    assert sorted(reused) == [False, True, True, True]
    listed = run_doit(project, "list", "--all", env=env).stdout
    assert f"promote:{variant(8, 512)}" in listed
    assert f"build:{variant(4, 256)}" in listed


def test_editing_one_sweep_value_builds_only_the_variants_it_makes(trt: tuple[Path, dict[str, str]]) -> None:
    project, env = trt
    kept = project / "repos" / variant(4, 256) / "tensorrt_llm/config.pbtxt"
    before = kept.stat().st_mtime_ns
    edit(project / f"models/{M}.yaml", "[256, 512]", "[256, 1024]")
    result = run_doit(project, f"build:{M}", env=env)
    assert result.rc == 0, result.stdout + result.stderr
    assert result.executed == per_variant(variant(4, 1024), variant(8, 1024))
    assert kept.stat().st_mtime_ns == before
    assert run_doit(project, f"build:{M}", env=env).executed == set()


def test_promote_is_explicit_and_points_the_engine_paths_at_repos_model(trt: tuple[Path, dict[str, str]]) -> None:
    project, env = trt
    serve = run_doit(project, f"serve:{M}", env=env)
    assert serve.rc != 0
    assert (
        f"repos/{M}/promoted.json is missing: {M} has a sweep; promote a variant to repos/{M}: doit promote:{M}@..."
        in serve.stdout + serve.stderr
    )
    chosen = variant(8, 256)
    result = run_doit(project, f"promote:{chosen}", env=env)
    assert result.rc == 0, result.stdout + result.stderr
    assert result.executed == {f"promote:{chosen}"}
    promoted = project / "repos" / M
    facts = read_json(promoted / "promoted.json")
    assert facts["variant"] == chosen
    assert facts["settings"] == {"engine.max_batch_size": 8, "engine.max_num_tokens": 256}
    config = text_format.Parse((promoted / "tensorrt_llm/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.parameters["gpt_model_path"].string_value == str((promoted / "tensorrt_llm/1/engine").resolve())
    # The variant's own config (a hardlink before promotion) still names the variant's folder.
    own = (project / "repos" / chosen / "tensorrt_llm/config.pbtxt").read_text()
    assert str((project / "repos" / chosen).resolve()) in own
    engine = promoted / "tensorrt_llm/1/engine/rank0.engine"
    assert engine.stat().st_ino == (project / "build" / chosen / "engine/engine/rank0.engine").stat().st_ino
    assert run_doit(project, f"build:{M}", env=env).executed == set()  # a build never promotes


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
    results = project / "results/tiny"
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


def _table(path: Path, rows: list[tuple[int, float, int]]) -> None:
    lines = ["Concurrency,Inferences/Second,p99 latency"] + [f"{c},{t},{p}" for c, t, p in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, ("m@b-32", 4.0, 900.0)),  # the highest throughput overall
        ({"p99 latency": 5000.0}, ("m@b-8", 4.0, 600.0)),  # the highest within the bound
        ({"p99 latency": 1000.0}, ("m@b-8", 1.0, 300.0)),
        ({"p99 latency": 10.0}, None),
    ],
)
def test_compare_picks_the_best_row_within_the_limits(
    tmp_path: Path, limits: dict[str, float], expected: tuple[str, float, float] | None
) -> None:
    tables = {"m@b-8": [(1, 300.0, 900), (4, 600.0, 4000)], "m@b-32": [(1, 250.0, 1200), (4, 900.0, 9000)]}
    inputs = {}
    for name, rows in tables.items():
        (tmp_path / name).mkdir()
        _table(tmp_path / name / f"{name}.csv", rows)
        inputs[name] = tmp_path / name
    params = {
        "name": "m",
        "compare": {"maximize": "Inferences/Second", "limits": limits},
        "variants": {"m@b-8": {"engine.max_batch_size": 8}, "m@b-32": {"engine.max_batch_size": 32}},
    }
    out = tmp_path / "out"
    out.mkdir()
    stage = Stage("compare", "m", params, out, compare.action, "compare")
    compare.action(StageContext(stage, out, inputs))
    best = read_json(out / "best.json")["best"]
    if expected is None:
        assert best is None
    else:
        assert isinstance(best, dict)
        assert (best["variant"], best["concurrency"], best["value"]) == expected
        assert best["promote"] == f"doit promote:{expected[0]}"
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0] == "Variant,engine.max_batch_size,Concurrency,Inferences/Second,p99 latency"
    assert summary[1:] == ["m@b-8,8,1,300.0,900", "m@b-8,8,4,600.0,4000", "m@b-32,32,1,250.0,1200", "m@b-32,32,4,900.0,9000"]
