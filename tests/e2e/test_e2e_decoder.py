"""Tiny GPT-2 and Llama through the whole LLM graph: cpu served by the real Triton, trt via a fake trtllm-build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.decoder_fixtures import build_tiny_decoder, hf_greedy
from tests.e2e.test_e2e_t5 import assert_ensemble_and_bls_answer
from tests.helpers import DECODER_YAML, FAKES, copy_project, doit_env, read_json, run_doit

PROMPTS = ["a man is eating food", "the girl is carrying", "a monkey is playing drums on"]
FAMILIES = ("gpt2", "llama")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    return {family: build_tiny_decoder(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def cpu_project(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = {f"tiny-{f}": DECODER_YAML.format(name=f"tiny-{f}", family=f, path=checkpoints[f]) for f in FAMILIES}
    root = copy_project(tmp_path_factory.mktemp("decoder-cpu"), models)
    result = run_doit(root, "build", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_ensemble_and_bls_text_equal_transformers_greedy(family: str, cpu_project: Path, checkpoints: dict[str, Path]) -> None:
    expected = hf_greedy(checkpoints[family], PROMPTS, 10)
    assert all(expected)
    repo = cpu_project / f"repos/tiny-{family}"
    assert_ensemble_and_bls_answer(repo, cpu_project / f"build/{family}-triton.log", dict(zip(PROMPTS, expected, strict=True)), 10)
    converted = json.loads((cpu_project / f"build/tiny-{family}/convert/config.json").read_text())
    assert converted["architecture"] == {"gpt2": "GPTForCausalLM", "llama": "LlamaForCausalLM"}[family]


def test_trt_builds_one_engine_per_family_with_its_settings(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    models = {f"tiny-{f}": DECODER_YAML.format(name=f"tiny-{f}", family=f, path=checkpoints[f]) for f in FAMILIES}
    root = copy_project(tmp_path / "p", models)
    log = tmp_path / "argv.jsonl"
    result = run_doit(root, "build", env=doit_env({"FAKE_TRTLLM_LOG": str(log)}, path_prefix=FAKES))
    assert result.rc == 0, result.stdout + result.stderr
    calls = {c[c.index("--checkpoint_dir") + 1].split("/")[1]: c for c in map(json.loads, log.read_text().splitlines())}
    assert sorted(calls) == ["tiny-gpt2", "tiny-llama"]
    common = ["--max_batch_size", "4", "--max_beam_width", "1", "--max_input_len", "48", "--max_seq_len", "64",
              "--gpt_attention_plugin", "float32", "--gemm_plugin", "float32", "--remove_input_padding", "enable",
              "--kv_cache_type", "paged"]  # fmt: skip
    for family, call in calls.items():
        assert call[:4] == ["--checkpoint_dir", f"build/{family}/convert", "--output_dir", call[3]]
        assert call[3].endswith("/engine")
        fmha = [] if family == "tiny-gpt2" else ["--context_fmha", "enable"]
        assert call[4 : 4 + len(common) + len(fmha)] == common + fmha
    trtllm = root / "repos/tiny-llama/tensorrt_llm"
    config = text_format.Parse((trtllm / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["gpt_model_path"] == str((trtllm / "1/engine").resolve())
    assert "encoder_model_path" not in params
    assert "cross_kv_cache_fraction" not in params
    assert (trtllm / "1/engine/rank0.engine").stat().st_ino == (root / "build/tiny-llama/engine/trt/engine/rank0.engine").stat().st_ino
    ensemble = (root / "repos/tiny-llama/ensemble/config.pbtxt").read_text()
    assert "decoder_input_ids" not in ensemble.split("ensemble_scheduling", 1)[1]
    assert read_json(root / "build/tiny-llama/engine/trt/action.json")["trtllm_version"] == "1.2.1"


def test_tensor_parallel_checkpoint_has_two_rank_files_and_builds_both(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    text = DECODER_YAML.format(name="tiny-llama", family="llama", path=checkpoints["llama"]).replace(
        "dtype: float32", "dtype: float32\n  tp_size: 2"
    )
    root = copy_project(tmp_path / "p", {"tiny-llama": text})
    log = tmp_path / "argv.jsonl"
    result = run_doit(root, "build", env=doit_env({"FAKE_TRTLLM_LOG": str(log)}, path_prefix=FAKES))
    assert result.rc == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (root / "build/tiny-llama/convert").glob("rank*.safetensors")) == [
        "rank0.safetensors",
        "rank1.safetensors",
    ]
    call = json.loads(log.read_text().splitlines()[0])
    assert call[call.index("--workers") + 1] == "2"
    assert sorted(p.name for p in (root / "repos/tiny-llama/tensorrt_llm/1/engine").glob("rank*.engine")) == [
        "rank0.engine",
        "rank1.engine",
    ]
