"""trtllm-build commands of decoder-only checkpoints (GPT-2, Llama, Gemma), against the pinned 1.2.1 flag table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.core.errors import UserError
from tasks.tools import trtllm, trtllm_argv

ENGINE: dict[str, Any] = {
    "max_batch_size": 8,
    "max_beam_width": 1,
    "max_input_len": 512,
    "max_output_len": 128,
    "max_num_tokens": None,
    "flags": {},
    "extra_args": [],
}
COMMON = [
    "--max_batch_size", "8", "--max_beam_width", "1", "--max_input_len", "512", "--max_seq_len", "640",
    "--gpt_attention_plugin", "float16", "--gemm_plugin", "float16", "--remove_input_padding", "enable",
    "--kv_cache_type", "paged",
]  # fmt: skip


def argv(family: str, engine: dict[str, Any] | None = None, **kw: Any) -> list[str]:
    table = trtllm.static_table()
    return trtllm_argv.decoder_argv(Path("trtllm-build"), family, Path("ckpt"), Path("out"), engine or ENGINE, "float16", table, **kw)


def test_each_family_gets_its_guides_settings_at_the_checkpoint_dtype() -> None:
    paths = ["trtllm-build", "--checkpoint_dir", "ckpt", "--output_dir", "out"]
    assert argv("gpt2") == [*paths, *COMMON]
    assert argv("llama") == [*paths, *COMMON, "--context_fmha", "enable"]
    assert argv("gemma") == [*paths, *COMMON, "--context_fmha", "enable"]


def test_every_rank_in_one_run_a_timing_cache_flags_and_extra_args() -> None:
    engine = {
        **ENGINE,
        "max_num_tokens": 4096,
        "flags": {"gemm_plugin": "auto", "use_paged_context_fmha": "enable"},
        "extra_args": ["--log_level", "verbose"],
    }
    got = argv("llama", engine, workers=2, timing_cache=Path("build/m/logs/engine.timing-cache"))
    assert got[got.index("--gemm_plugin") + 1] == "auto"  # a user flag replaces the default in place
    tail = got[got.index("--context_fmha") :]
    assert tail == [
        "--context_fmha", "enable", "--max_num_tokens", "4096", "--workers", "2",
        "--input_timing_cache", "build/m/logs/engine.timing-cache", "--output_timing_cache", "build/m/logs/engine.timing-cache", "--use_paged_context_fmha", "enable",
        "--log_level", "verbose",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"remove_input_padding": "disable"},
            "engine.flags.remove_input_padding: Triton's tensorrt_llm backend requires remove_input_padding enable",
        ),
        ({"kv_cache_type": "continuous"}, "engine.flags.kv_cache_type: Triton's tensorrt_llm backend requires kv_cache_type paged"),
        ({"max_output_len": 64}, "engine.flags.max_output_len: "),
        ({"no_such_flag": 1}, "engine.flags.no_such_flag: "),
    ],
)
def test_flags_serving_cannot_use_are_errors(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        argv("gpt2", {**ENGINE, "flags": flags})
