"""sweep on target trt with a fake trtllm-build (argv recorded): the 2x2 engine sweep of the issue's example,
variants sharing what they do not change, rebuilt one by one and promoted explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.decoder_fixtures import build_tiny_decoder
from tests.helpers import FAKES, DoitRun, copy_project, doit_env, edit, read_json, run_doit

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


VARIANTS = [variant(b, t) for b in (4, 8) for t in (256, 512)]


@dataclass(frozen=True)
class FirstBuild:
    """What the first build left, taken before any test edits or promotes (so no test depends on another's order)."""

    result: DoitRun
    argv: dict[str, list[str]]
    engines: list[bool]
    promoted_repository: bool
    timing_caches: list[str]
    reused: list[object]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], FirstBuild]:
    """The 2 x 2 sweep built once with the fake trtllm-build; every test starts from a built project."""
    root = tmp_path_factory.mktemp("sweep-trt")
    checkpoint = build_tiny_decoder("llama", root / "ckpt")
    project = copy_project(root / "p", {M: LLAMA.format(path=checkpoint)})
    env = doit_env({"FAKE_TRTLLM_LOG": str(root / "argv.jsonl")}, path_prefix=FAKES)
    result = run_doit(project, f"build:{M}", env=env)
    assert result.rc == 0, result.stdout + result.stderr
    first = FirstBuild(
        result=result,
        argv=calls(Path(env["FAKE_TRTLLM_LOG"])),
        engines=[(project / "repos" / v / "tensorrt_llm/1/engine/rank0.engine").is_file() for v in VARIANTS],
        promoted_repository=(project / "repos" / M).exists(),
        timing_caches=[p.name.split("-")[-1] for p in (project / f"build/{M}/timing-cache").iterdir()],
        reused=[read_json(project / f"build/{v}/engine/trt/action.json")["timing_cache"]["engine"]["reused"] for v in VARIANTS],  # type: ignore[index]
    )
    return project, env, first


@pytest.fixture
def trt(built: tuple[Path, dict[str, str], FirstBuild]) -> tuple[Path, dict[str, str]]:
    return built[0], built[1]


def test_two_by_two_sweep_builds_four_variants_and_converts_once(built: tuple[Path, dict[str, str], FirstBuild]) -> None:
    project, env, first = built
    assert first.result.executed == {f"fetch:{M}", f"convert:{M}"} | per_variant(*VARIANTS)
    assert sorted(first.argv) == sorted(VARIANTS)
    for name, call in first.argv.items():
        batch, tokens = (part.split("-")[1] for part in name.split("@")[1].split(","))
        assert call[:2] == ["--checkpoint_dir", f"build/{M}/convert"]
        assert call[call.index("--max_batch_size") + 1] == batch
        assert call[call.index("--max_num_tokens") + 1] == tokens
    assert all(first.engines)
    assert not first.promoted_repository  # a swept model's repos/<m> is only made by promote
    # One trtllm-build timing cache for the model: every build after the first starts from it.
    assert first.timing_caches == ["engine.cache"]
    assert sorted(first.reused, key=bool) == [False, True, True, True]
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
    assert engine.stat().st_ino == (project / "build" / chosen / "engine/trt/engine/rank0.engine").stat().st_ino
    assert run_doit(project, f"build:{M}", env=env).executed == set()  # a build never promotes
