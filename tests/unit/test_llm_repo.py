"""The LLM repository (TensorRT-LLM's inflight_batcher_llm layout) for both targets, without a server: filled
templates that parse, tensors per model, and the values a trt repository needs.

Repositories are assembled as the config and repo stages do it: ``config.render_model`` then ``repo.link_model``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.stages import config
from tasks.triton import llm_layout
from tests.support.llm_repo import ENGINE, TRITON, Reference, assemble


def parsed(repository: Path, model: str) -> Any:
    return config.parse((repository / model / "config.pbtxt").read_text(), repository / model)


def tensors(cfg: Any) -> tuple[list[str], list[str]]:
    """Inputs and outputs as comparable text (name, type, dims, reshape, optional)."""
    return [str(t).replace("\n", " ") for t in cfg.input], [str(t).replace("\n", " ") for t in cfg.output]


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
