"""The LLM engine stage on target trt without a GPU: a fake trtllm-build on PATH records the argv."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.core import fsops, hashing
from tasks.core import stage as stages
from tasks.core.errors import UserError
from tasks.core.stage import Stage
from tasks.stages import engine_llm
from tasks.tools import toolchain, trtllm, trtllm_argv
from tests.helpers import FAKES

ENGINE: dict[str, Any] = {
    "max_batch_size": 8,
    "max_input_len": 64,
    "max_output_len": 16,
    "max_beam_width": 2,
    "max_num_tokens": None,
    "flags": {},
    "encoder_flags": {},
    "decoder_flags": {},
    "extra_args": [],
}
TOOLS = {"tensorrt_llm": "1.2.1", "tensorrt": "10.14.1", "gpu": "Fake GPU", "compute_capability": "9.0"}
FAKE_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=index) i=0; while [ $i -lt ${FAKE_GPUS:-2} ]; do echo $i; i=$((i+1)); done ;;
  *) echo "Fake GPU, 9.0" ;;
esac
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """cwd = tmp_path (build/.cache lives there), the fakes first on PATH, a private digest cache."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTLLM_LOG", str(tmp_path / "argv.jsonl"))
    for name in ("FAKE_TRTLLM_FAIL", "FAKE_TRTLLM_VERSION", "FAKE_GPUS"):
        monkeypatch.delenv(name, raising=False)
    digests = hashing.StatCache(tmp_path / "digests.sqlite")
    monkeypatch.setattr(hashing, "_CACHE", digests)
    toolchain.gpu.cache_clear()
    yield tmp_path
    toolchain.gpu.cache_clear()
    digests.close()


def checkpoint(root: Path, *, tp: int = 1, world: int | None = None, dtype: str = "float16") -> Path:
    """A converted T5 checkpoint as the convert stage lays it out (rank weights are never read here)."""
    ckpt = root / "convert"
    for component, arch in (("encoder", "EncoderModel"), ("decoder", "DecoderModel")):
        folder = ckpt / component
        folder.mkdir(parents=True)
        mapping = {"world_size": tp if world is None else world, "tp_size": tp, "pp_size": 1}
        config = {"architecture": arch, "dtype": dtype, "mapping": mapping, "model_type": "t5"}
        (folder / "config.json").write_text(json.dumps(config))
        for rank in range(tp):
            (folder / f"rank{rank}.safetensors").write_bytes(b"weights")
    (ckpt / "manifest.json").write_text("{}")
    return ckpt


def engine_stage(root: Path, ckpt: Path, engine: dict[str, Any] | None = None, target: str = "trt") -> Stage:
    convert = Stage("convert", "t5", {}, ckpt, lambda _ctx: None, "converted checkpoint")
    params = {"target": target, "engine": {**ENGINE, **(engine or {})}, "toolchain": TOOLS}
    return Stage(
        "engine", "t5", params, root / "build/t5/engine" / target, engine_llm.action, "engines",
        deps={"checkpoint": convert}, target=target, log_dir=root / "build/t5/logs",
    )  # fmt: skip


def build(stage: Stage) -> dict[str, Any]:
    """Run the stage as doit would (private work dir, atomic publish); its action.json."""
    stages._build(stage)
    record = fsops.read_json(stage.out_dir / "action.json")
    assert isinstance(record, dict)
    return record


def calls(root: Path) -> list[list[str]]:
    log = root / "argv.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def expected(
    root: Path, component: str, *, dtype: str = "float16", workers: int = 1, gemm: str | None = None, tokens: int | None = None
) -> list[str]:
    work = fsops.tmp_sibling(root / "build/t5/engine/trt")
    common = [
        str(FAKES / "trtllm-build"),
        "--checkpoint_dir", str(root / "convert" / component),
        "--output_dir", str(work / component),
        "--max_batch_size", "8",
        "--max_beam_width", "2",
        "--context_fmha", "disable",
        "--bert_attention_plugin", dtype,
        "--gpt_attention_plugin", dtype,
        "--gemm_plugin", gemm or dtype,
        "--remove_input_padding", "enable",
        "--moe_plugin", "disable",
    ]  # fmt: skip
    if tokens is not None:
        common += ["--max_num_tokens", str(tokens)]
    if component == "encoder":
        specific = ["--kv_cache_type", "disabled", "--max_input_len", "64"]
    else:
        specific = ["--kv_cache_type", "paged", "--max_input_len", "1", "--max_encoder_input_len", "64", "--max_seq_len", "17"]
    parallel = ["--workers", str(workers)] if workers > 1 else []
    private = str(root / f"build/t5/logs/engine-{component}.timing-cache")
    timing = ["--input_timing_cache", private, "--output_timing_cache", private]
    return common + specific + parallel + timing


def test_exact_encoder_and_decoder_argv_and_published_engines(env: Path) -> None:
    record = build(engine_stage(env, checkpoint(env)))
    assert record["argv"] == {"encoder": expected(env, "encoder"), "decoder": expected(env, "decoder")}
    assert calls(env) == [expected(env, "encoder")[1:], expected(env, "decoder")[1:]]
    assert record["trtllm_version"] == "1.2.1"
    assert record["flag_table"] == f"{FAKES / 'trtllm-build'} --help"
    out = env / "build/t5/engine/trt"
    assert sorted(p.name for p in (out / "encoder").iterdir()) == ["config.json", "rank0.engine"]
    decoder = json.loads((out / "decoder/config.json").read_text())
    assert decoder["version"] == "1.2.1"
    assert decoder["build_config"]["max_seq_len"] == 17
    assert (env / "build/t5/logs/engine-encoder.log").read_text().startswith("[TensorRT-LLM] TensorRT LLM version: 1.2.1")
    assert not (env / "model.cache").exists()
    # The timing caches persist beside the model (shared by a sweep's variants), one per component.
    caches = sorted(p.name for p in (env / "build/t5/timing-cache").iterdir())
    assert caches == ["10.14.1-Fake-GPU-9.0-decoder.cache", "10.14.1-Fake-GPU-9.0-encoder.cache"]
    assert record["timing_cache"]["encoder"]["reused"] is False


def test_flags_merge_into_both_builds_and_component_flags_win(env: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = {
        "max_num_tokens": 4096,
        "flags": {"log_level": "verbose", "gemm_plugin": "disable", "strip_plan": True, "weight_sparsity": False},
        "encoder_flags": {"bert_context_fmha_fp32_acc": "enable", "log_level": "warning"},
        "decoder_flags": {"tokens_per_block": 64, "kv_cache_type": "paged"},
        "extra_args": ["--visualize_network", "net-graph"],
    }
    record = build(engine_stage(env, checkpoint(env, dtype="bfloat16"), engine))
    # gemm_plugin is a default the flags may change in place; kv_cache_type paged is what the decoder needs anyway.
    assert record["argv"]["encoder"] == [
        *expected(env, "encoder", dtype="bfloat16", gemm="disable", tokens=4096),
        "--log_level", "warning", "--strip_plan", "--bert_context_fmha_fp32_acc", "enable",
        "--visualize_network", "net-graph",
    ]  # fmt: skip
    assert record["argv"]["decoder"] == [
        *expected(env, "decoder", dtype="bfloat16", gemm="disable", tokens=4096),
        "--log_level", "verbose", "--strip_plan", "--tokens_per_block", "64",
        "--visualize_network", "net-graph",
    ]  # fmt: skip
    assert "passing engine.extra_args to trtllm-build unchecked: --visualize_network net-graph" in caplog.text


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ({"flags": {"max_output_len": 200}}, "engine.flags.max_output_len: removed in TensorRT-LLM 0.12"),
        (
            {"flags": {"use_custom_all_reduce": "disable"}},
            "engine.flags.use_custom_all_reduce: removed from trtllm-build in TensorRT-LLM 0.12",
        ),
        ({"flags": {"fooBar": 1}}, "engine.flags.fooBar: not a trtllm-build flag in TensorRT-LLM 1.2.1"),
        ({"decoder_flags": {"context_fmha": "on"}}, "engine.decoder_flags.context_fmha: expected one of enable, disable, got 'on'"),
        ({"flags": {"strip_plan": "yes"}}, "engine.flags.strip_plan: is a switch: expected true or false, got 'yes'"),
        ({"flags": {"tokens_per_block": "many"}}, "engine.flags.tokens_per_block: takes an integer"),
        ({"flags": {"max_decoder_seq_len": 300}}, "engine.flags.max_decoder_seq_len: set by the engine stage (use engine.max_output_len"),
        ({"encoder_flags": {"output_dir": "x"}}, "engine.encoder_flags.output_dir: set by the engine stage"),
        ({"flags": {"dry_run": True}}, "engine.flags.dry_run: not allowed here: it builds no engine"),
        (
            {"flags": {"context_fmha": "enable"}},
            "engine.flags.context_fmha: T5 requires context_fmha disable for the encoder: TensorRT-LLM's fused",
        ),
        ({"decoder_flags": {"gpt_attention_plugin": "float32"}}, "T5 requires gpt_attention_plugin float16 for the decoder"),
        ({"flags": {"kv_cache_type": "paged"}}, "engine.flags.kv_cache_type: T5 requires kv_cache_type disabled for the encoder"),
        ({"encoder_flags": {"remove_input_padding": "disable"}}, "T5 requires remove_input_padding enable for the encoder"),
    ],
)
def test_bad_flags_fail_before_any_build(env: Path, engine: dict[str, Any], message: str) -> None:
    stage = engine_stage(env, checkpoint(env), engine)
    with pytest.raises(UserError) as caught:
        build(stage)
    assert message in str(caught.value)
    if "removed" in message:
        assert "(trtllm-build of TensorRT-LLM 1.2.1," in str(caught.value)
    assert calls(env) == []
    assert not stage.out_dir.exists()


def test_failing_build_shows_the_log_tail_and_publishes_nothing(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRTLLM_FAIL", "1")
    stage = engine_stage(env, checkpoint(env))
    with pytest.raises(UserError) as caught:
        build(stage)
    text = str(caught.value)
    assert "engine:t5: trtllm-build exited with status 1; last lines of " in text
    assert "engine-encoder.log" in text
    assert "Error Code 2: Internal Error (out of memory)" in text
    assert len(calls(env)) == 1  # the decoder is not attempted
    assert not stage.out_dir.exists()
    assert not fsops.tmp_sibling(stage.out_dir).exists()


def test_tensor_parallel_checkpoint_builds_every_rank_with_workers(env: Path) -> None:
    record = build(engine_stage(env, checkpoint(env, tp=2)))
    assert record["argv"]["encoder"] == expected(env, "encoder", workers=2)
    assert record["argv"]["decoder"] == expected(env, "decoder", workers=2)
    for component in ("encoder", "decoder"):
        names = sorted(p.name for p in (env / "build/t5/engine/trt" / component).iterdir())
        assert names == ["config.json", "rank0.engine", "rank1.engine"]


def test_more_ranks_than_gpus_is_an_error(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_GPUS", "1")
    with pytest.raises(UserError, match=r"world size 2 \(tp_size 2 x pp_size 1\) but nvidia-smi lists 1 GPU"):
        build(engine_stage(env, checkpoint(env, tp=2)))
    assert calls(env) == []


def test_world_size_mismatch_is_an_error(env: Path) -> None:
    with pytest.raises(UserError, match=r"mapping.world_size 2 != tp_size 1 x pp_size 1"):
        build(engine_stage(env, checkpoint(env, tp=1, world=2)))
    assert calls(env) == []


def test_engine_of_another_trtllm_version_is_an_error(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The package metadata says 1.2.1, but the trtllm-build on PATH belongs to another installation.
    real = toolchain.package_version
    monkeypatch.setattr(toolchain, "package_version", lambda dist: "1.2.1" if dist == "tensorrt_llm" else real(dist))
    monkeypatch.setenv("FAKE_TRTLLM_VERSION", "1.3.0rc1")
    stage = engine_stage(env, checkpoint(env))
    with pytest.raises(UserError, match=r"the encoder engine was built by TensorRT-LLM 1.3.0rc1 but TensorRT-LLM 1.2.1 is installed"):
        build(stage)
    assert len(calls(env)) == 1
    assert not stage.out_dir.exists()


def test_missing_trtllm_build_is_one_clear_line(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(env / "bin"))
    with pytest.raises(UserError, match=r"^engine:t5: trtllm-build not found on PATH \(target trt\); run inside the pinned"):
        build(engine_stage(env, checkpoint(env)))


def test_cpu_target_writes_a_stable_note_and_runs_nothing(
    env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(env / "bin"))
    caplog.set_level("INFO")
    build(engine_stage(env, checkpoint(env), {"flags": {"log_level": "info"}}, target="cpu"))
    out = env / "build/t5/engine/cpu"
    assert sorted(p.name for p in out.iterdir()) == ["action.json", "engine.json", "manifest.json"]
    assert json.loads((out / "engine.json").read_text()) == engine_llm.CPU_ENGINE
    assert (out / "engine.json").read_text() == json.dumps(engine_llm.CPU_ENGINE, indent=1, sort_keys=True) + "\n"
    assert "target cpu builds no TensorRT-LLM engine" in caplog.text
    assert calls(env) == []


def test_trt_fingerprint_fields(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_TRITON_SERVER_VERSION", "26.05")  # set by the NGC Triton images
    assert trtllm.trt_fingerprint() == {
        "tensorrt_llm": "1.2.1",
        "tensorrt": toolchain.package_version("tensorrt"),
        "gpu": "Fake GPU",
        "compute_capability": "9.0",
        "container": "26.05",
    }
    assert (env / "build/.cache/trtllm-build-help.json").is_file()


@pytest.mark.usefixtures("env")
def test_help_is_read_once_per_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = FAKES / "trtllm-build"
    first = trtllm.installed_table(binary)
    monkeypatch.setattr(trtllm, "_read_help", lambda _binary: pytest.fail("--help read again"))
    assert trtllm.installed_table(binary) == first
    assert first.version == "1.2.1"
    assert first.flags["kv_cache_type"].choices == ("continuous", "paged", "disabled")  # hidden by the help, kept from the table
    assert "max_output_len" in first.removed


def test_parse_help_on_the_fixture() -> None:
    flags = trtllm.parse_help((FAKES / "trtllm-build-help.txt").read_text())
    static = trtllm.static_table()
    assert set(flags) == set(static.flags)
    assert flags["context_fmha"] == trtllm.FlagSpec("choice", choices=("enable", "disable"))
    assert flags["gemm_plugin"].choices == ("auto", "float16", "float32", "bfloat16", "int32", "fp8", "nvfp4", "disable")
    assert flags["strip_plan"].kind == "switch"
    assert flags["max_seq_len"] == trtllm.FlagSpec("value", aliases=("max_decoder_seq_len",))
    assert flags["lora_dir"].nargs == "+"
    assert flags["lora_target_modules"].kind == "choice"
    assert flags["kv_cache_type"].kind == "value"
    assert "help" not in flags
    assert "remove_input_padding" in flags  # also mentioned inside another flag's description


def test_static_table_and_load_time_check() -> None:
    table = trtllm.static_table()
    assert table.version == trtllm.PINNED_VERSION == "1.2.1"
    assert table.canonical("max_multimodal_len") == "max_prompt_embedding_table_size"
    assert trtllm.flag_args({"strip_plan": True, "monitor_memory": False, "lora_dir": "a b"}, table) == [
        "--strip_plan",
        "--lora_dir",
        "a",
        "b",
    ]
    assert trtllm_argv.check_engine_flags({"flags": {"log_level": "debug"}, "decoder_flags": {"kv_cache_type": "paged"}}) is None
    assert trtllm_argv.check_engine_flags({"flags": {}, "encoder_flags": {"max_output_len": 9}}) == (
        "encoder_flags.max_output_len",
        (
            "removed in TensorRT-LLM 0.12 (deprecated in 0.11); use max_seq_len, which the engine stage sets from "
            "engine.max_output_len + 1 (trtllm-build of TensorRT-LLM 1.2.1, table trtllm-build-1.2.1.json)"
        ),
    )
    problem = trtllm_argv.check_engine_flags({"flags": {"kv_cache_type": "disabled"}})
    assert problem is not None
    assert problem[0] == "flags.kv_cache_type"
    assert problem[1].startswith("T5 requires kv_cache_type paged for the decoder")
    with pytest.raises(UserError, match=r"no trtllm-build flag table for TensorRT-LLM 0.9.0 \(tables: 1.2.1\)"):
        trtllm.static_table("0.9.0")
