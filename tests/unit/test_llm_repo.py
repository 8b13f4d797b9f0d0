"""The LLM repository (TensorRT-LLM's inflight_batcher_llm layout) for both targets, and the CPU stand-in for
``tensorrt_llm`` served by the real Triton and compared with transformers.

Repositories are assembled as the config and repo stages do it: ``config.render_model`` then ``repo.link_model``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from tasks.commands.conformance.fixtures import build_tiny_t5
from tasks.stages import config, repo
from tasks.triton import llm_layout

MAX_TOKENS = 12
TRITON: dict[str, Any] = {
    "max_batch_size": 4,
    "decoupled": False,
    "instance_count": 1,
    # Long enough for two requests sent together to be batched, so batch independence is exercised.
    "max_queue_delay_us": 20_000,
    "kv_cache_free_gpu_mem_fraction": 0.8,
    "cross_kv_cache_fraction": 0.5,
    "batch_scheduler_policy": "guaranteed_no_evict",
    "max_tokens_in_paged_kv_cache": None,
}
ENGINE: dict[str, Any] = {"max_batch_size": 4, "max_input_len": 64, "max_output_len": 16, "max_beam_width": 2}


def assemble(hf: Path, root: Path, target: str, triton: dict[str, Any], engine_dir: Path | None = None) -> Path:
    """``root/repo`` built like the product builds ``repos/<name>``; returns the repository."""
    tokenizer_files, model_files = llm_layout.split_checkpoint_files(p.name for p in hf.iterdir() if p.is_file())
    models = llm_layout.llm_models(target, tokenizer_files=tokenizer_files, hf_files=model_files)
    out = root / "repo"
    hf_config = json.loads((hf / "config.json").read_text())
    values = llm_layout.template_values("t5tiny", triton, ENGINE, target, out.resolve(), hf_config)
    for model in models:
        config.render_model(model, values, root / "config")
        repo.link_model(model, root / "config" / model.name, {"hf": hf, "engine": engine_dir or root / "no-engine"}, out / model.name)
    return out


def parsed(repository: Path, model: str) -> Any:
    return config.parse((repository / model / "config.pbtxt").read_text(), repository / model)


def tensors(cfg: Any) -> tuple[list[str], list[str]]:
    """Inputs and outputs as comparable text (name, type, dims, reshape, optional)."""
    return [str(t).replace("\n", " ") for t in cfg.input], [str(t).replace("\n", " ") for t in cfg.output]


# ------------------------------------------------------------------------------------- fixtures


@dataclass
class Reference:
    """transformers on the same checkpoint: what the repository must answer."""

    folder: Path

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.folder)

    @cached_property
    def model(self) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM.from_pretrained(self.folder).eval()

    def ids(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt).input_ids)

    def generate(self, prompt: str, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model.generate(**self.tokenizer(prompt, return_tensors="pt"), max_new_tokens=MAX_TOKENS, **kwargs)

    def text(self, prompt: str) -> str:
        return str(self.tokenizer.decode(self.generate(prompt)[0], skip_special_tokens=True))

    def beams(self, prompt: str, width: int) -> list[list[int]]:
        """Generated tokens per beam, best first, without the decoder start token and the end token."""
        out = self.generate(prompt, num_beams=width, num_return_sequences=width).tolist()
        return [seq[1 : seq.index(1, 1)] if 1 in seq[1:] else seq[1:] for seq in out]


@pytest.fixture(scope="module")
def flan(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return Reference(build_tiny_t5(tmp_path_factory.mktemp("t5") / "flan", variant="flan"))


# ------------------------------------------------------------------------------------- requests


# ---------------------------------------------------------------------------------------- tests


def test_templates_fill_and_parse_for_both_targets(flan: Reference, tmp_path: Path) -> None:
    engine = tmp_path / "engine"
    for half in llm_layout.ENGINE_DIRS:
        (engine / half).mkdir(parents=True)
        (engine / half / "config.json").write_text("{}")
        (engine / half / "rank0.engine").write_bytes(b"plan")
    limited = {**TRITON, "max_tokens_in_paged_kv_cache": 4096}
    trt = assemble(flan.folder, tmp_path / "trt", "trt", limited, engine)
    cpu = assemble(flan.folder, tmp_path / "cpu", "cpu", TRITON)
    for repository in (trt, cpu):
        assert sorted(p.name for p in repository.iterdir()) == sorted(llm_layout.MODEL_NAMES)
        assert (repository / "preprocessing/1/tokenizer/tokenizer.json").is_file()
        assert (repository / "postprocessing/1/tokenizer/tokenizer_config.json").is_file()

    backend = parsed(trt, "tensorrt_llm")
    assert backend.backend == "tensorrtllm"
    params = {k: v.string_value for k, v in backend.parameters.items()}
    decoder = trt.resolve() / "tensorrt_llm/1/decoder"
    assert params["gpt_model_path"] == str(decoder)
    assert params["encoder_model_path"] == str(trt.resolve() / "tensorrt_llm/1/encoder")
    assert (decoder / "rank0.engine").stat().st_ino == (engine / "decoder/rank0.engine").stat().st_ino
    assert params["max_tokens_in_paged_kv_cache"] == "4096"
    assert params["max_beam_width"] == "2"
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["exclude_input_in_output"] == "true"

    stand_in = parsed(cpu, "tensorrt_llm")
    assert stand_in.backend == "python"
    assert (cpu / "tensorrt_llm/1/hf/model.safetensors").stat().st_ino == (flan.folder / "model.safetensors").stat().st_ino
    assert not (cpu / "tensorrt_llm/1/hf/tokenizer.json").exists()
    # Clients cannot tell the targets apart: same tensors on tensorrt_llm, same user-facing ones on ensemble and BLS.
    assert tensors(stand_in) == tensors(backend)
    assert tensors(parsed(cpu, "tensorrt_llm_bls")) == tensors(parsed(cpu, "ensemble"))
    assert not any(
        k == "max_tokens_in_paged_kv_cache"
        for k in parsed(assemble(flan.folder, tmp_path / "t2", "trt", TRITON, engine), "tensorrt_llm").parameters
    )


def test_trt_values_need_an_absolute_repo_and_differ_for_decoder_only(flan: Reference) -> None:
    hf_config = json.loads((flan.folder / "config.json").read_text())
    with pytest.raises(ValueError, match="absolute"):
        llm_layout.template_values("t5tiny", TRITON, ENGINE, "trt", Path("repos/t5tiny"), hf_config)
    t5 = llm_layout.template_values("t5tiny", TRITON, ENGINE, "trt", Path("/r/t5tiny"), hf_config)
    assert t5["decoder_engine_dir"] == "/r/t5tiny/tensorrt_llm/1/decoder"
    assert (
        t5["encoder_model_path_parameter"]
        == 'parameters { key: "encoder_model_path" value: { string_value: "/r/t5tiny/tensorrt_llm/1/encoder" } }'
    )
    assert "cross_kv_cache_fraction" in str(t5["cross_kv_cache_fraction_parameter"])
    gpt = llm_layout.template_values("gpt", TRITON, ENGINE, "trt", Path("/r/gpt"), {"is_encoder_decoder": False})
    assert gpt["decoder_engine_dir"] == "/r/gpt/tensorrt_llm/1/engine"
    assert str(gpt["encoder_model_path_parameter"]).startswith("# ")
    assert str(gpt["cross_kv_cache_fraction_parameter"]).startswith("# ")
    assert (gpt["encoder_decoder"], str(gpt["decoder_input_maps"]).startswith("# ")) == ("false", True)
