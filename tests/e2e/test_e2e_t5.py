"""Flan-T5-shaped tiny model through the whole LLM graph: cpu served by the real Triton, trt via a fake trtllm-build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tasks.commands.conformance.fixtures import build_tiny_t5
from tasks.commands.conformance.project import LLM_YAML
from tasks.triton.launcher import TritonServer
from tests.helpers import FAKES, copy_project, doit_env, read_json, run_doit

# The conformance kit's LLM model file, with {path} left to fill.
T5_YAML = LLM_YAML.format(name="t5tiny", family="t5", path="{path}")
ALL = {"fetch:t5tiny", "convert:t5tiny", "engine:t5tiny", "config:t5tiny", "repo:t5tiny"}
PROMPTS = ["translate English to German: the house is wonderful", "a man is eating food", "summarize: triton serves models"]


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("t5") / "flan", variant="flan")


@pytest.fixture(scope="module")
def cpu_project(tiny_t5: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("t5cpu"), {"t5tiny": T5_YAML.format(path=tiny_t5)})
    result = run_doit(root, "build:t5tiny", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.executed == ALL
    return root


def hf_greedy(folder: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = T5ForConditionalGeneration.from_pretrained(folder).eval()  # type: ignore[no-untyped-call]
    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        texts.append(str(tokenizer.decode(out[0], skip_special_tokens=True)))
    return texts


def generate(client: grpcclient.InferenceServerClient, model: str, prompt: str, max_tokens: int) -> str:
    text = grpcclient.InferInput("text_input", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=object))
    tokens = grpcclient.InferInput("max_tokens", [1, 1], "INT32")
    tokens.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
    result = client.infer(model, [text, tokens])
    out = result.as_numpy("text_output").reshape(-1)[0]
    return out.decode() if isinstance(out, bytes) else str(out)


def assert_ensemble_and_bls_answer(repo: Path, log: Path, answers: dict[str, str], max_tokens: int) -> None:
    """Serve ``repo`` on cpu; the ensemble and the BLS model answer each prompt with its expected text."""
    with TritonServer(repo, "cpu", log) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for prompt, want in answers.items():
                assert generate(client, "ensemble", prompt, max_tokens) == want
                assert generate(client, "tensorrt_llm_bls", prompt, max_tokens) == want
        finally:
            client.close()


def test_cpu_repository_generates_what_transformers_generates(cpu_project: Path, tiny_t5: Path) -> None:
    repo = cpu_project / "repos/t5tiny"
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == [
        "ensemble",
        "postprocessing",
        "preprocessing",
        "tensorrt_llm",
        "tensorrt_llm_bls",
    ]
    assert json.loads((cpu_project / "build/t5tiny/engine/cpu/engine.json").read_text())["engine"] == "none"
    expected = hf_greedy(tiny_t5, PROMPTS, 12)
    assert any(expected)
    assert_ensemble_and_bls_answer(repo, cpu_project / "build/t5-triton.log", dict(zip(PROMPTS, expected, strict=True)), 12)


def test_engine_edit_reruns_config_repo_but_not_convert(cpu_project: Path) -> None:
    # The cpu target builds no LLM engine (its note reads no engine: key); the configs carry the limit.
    path = cpu_project / "models/t5tiny.yaml"
    path.write_text(path.read_text().replace("max_output_len: 16", "max_output_len: 20"))
    result = run_doit(cpu_project, "build:t5tiny", "target=cpu")
    assert result.rc == 0, result.stderr
    assert result.executed == {"config:t5tiny", "repo:t5tiny"}


def test_convert_dtype_edit_reruns_convert_and_stops_at_the_cpu_engine(cpu_project: Path) -> None:
    path = cpu_project / "models/t5tiny.yaml"
    path.write_text(path.read_text().replace("dtype: float32", "dtype: float16"))
    result = run_doit(cpu_project, "build:t5tiny", "target=cpu")
    assert result.rc == 0, result.stderr
    # On cpu the engine stage is "none" whatever the checkpoint: its bytes do not change.
    assert result.executed == {"convert:t5tiny", "engine:t5tiny"}
    config = read_json(cpu_project / "build/t5tiny/convert/action.json")
    assert config["params"]["convert"]["dtype"] == "float16"  # type: ignore[index]


def test_trt_target_with_fake_trtllm_build(tiny_t5: Path, tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p", {"t5tiny": T5_YAML.format(path=tiny_t5)})
    log = tmp_path / "argv.jsonl"
    env = doit_env({"FAKE_TRTLLM_LOG": str(log)}, path_prefix=FAKES)
    result = run_doit(root, "build:t5tiny", env=env)
    assert result.rc == 0, result.stdout + result.stderr
    assert "target: trt (auto: found" in result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[c.index("--output_dir") + 1].rsplit("/", 1)[-1] for c in calls] == ["encoder", "decoder"]
    encoder, decoder = calls
    assert encoder[encoder.index("--kv_cache_type") + 1] == "disabled"
    assert encoder[encoder.index("--context_fmha") + 1] == "disable"
    assert decoder[decoder.index("--max_input_len") + 1] == "1"
    assert decoder[decoder.index("--max_encoder_input_len") + 1] == "64"
    assert decoder[decoder.index("--max_seq_len") + 1] == "17"
    trtllm = root / "repos/t5tiny/tensorrt_llm"
    config = text_format.Parse((trtllm / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "tensorrtllm"
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["encoder_model_path"] == str((trtllm / "1/encoder").resolve())
    assert params["gpt_model_path"] == str((trtllm / "1/decoder").resolve())
    engine = root / "build/t5tiny/engine/trt/decoder/rank0.engine"
    assert (trtllm / "1/decoder/rank0.engine").stat().st_ino == engine.stat().st_ino
    assert read_json(root / "build/t5tiny/engine/trt/action.json")["trtllm_version"] == "1.2.1"
    # A convert.dtype edit reaches the engines and the repository on trt.
    path = root / "models/t5tiny.yaml"
    path.write_text(path.read_text().replace("dtype: float32", "dtype: bfloat16"))
    again = run_doit(root, "build:t5tiny", env=env)
    assert again.rc == 0, again.stderr
    assert again.executed == {"convert:t5tiny", "engine:t5tiny", "repo:t5tiny"}


def test_t5_v1_0_through_doit_and_triton(tmp_path: Path) -> None:
    """The original T5 (relu, tied embeddings, rescaled lm_head input) through the same graph."""
    folder = build_tiny_t5(tmp_path / "v1_0", variant="v1_0")
    root = copy_project(tmp_path / "p", {"t5tiny": T5_YAML.format(path=folder)})
    result = run_doit(root, "build:t5tiny", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    decoder = json.loads((root / "build/t5tiny/convert/decoder/config.json").read_text())
    assert decoder["rescale_before_lm_head"] is True
    expected = hf_greedy(folder, PROMPTS, 10)
    with TritonServer(root / "repos/t5tiny", "cpu", root / "build/t5-triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            assert [generate(client, "ensemble", p, 10) for p in PROMPTS] == expected
        finally:
            client.close()
