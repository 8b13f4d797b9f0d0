"""The blocks of a model file, per kind and family: their fields and defaults.

export, convert, engine, triton, bench, members, index; and the rules between blocks of one file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.core.errors import shown
from tasks.spec.modelspec import (
    IMAGE_FAMILIES,
    MEMBER_ROLES,
    REQUIRED,
    Check,
    Where,
    boolean,
    bounded,
    distinct_int_list,
    fraction,
    gpu_list,
    integer,
    one_of,
    optional,
    path_text,
    scalar_map,
    str_list,
    text,
)
from tasks.tools import trtexec, trtllm_argv

# ---- blocks --------------------------------------------------------------------------------

# Upper bounds no real model reaches (docs/models.md lists them): a typo fails naming its key.
BATCH = 16_384  # batch sizes (trtllm-build's default max_batch_size is 2048)
SEQ = 1_048_576  # tokens of one sequence: the longest contexts models ship with
TOKENS = 1 << 30  # token budgets across a batch (max_num_tokens, the paged KV cache)
INSTANCES = 256  # model instances per Triton model
RANKS = 256  # tp_size, pp_size
QUEUE_US = 10_000_000  # a dynamic batching delay of 10 s

BENCH_TOOLS = ("builtin", "perf_analyzer", "genai-perf")
# perf_analyzer's defaults where it has one (5 s windows, ±10 %, 10 trials).
BENCH_COMMON: dict[str, tuple[Check, Any]] = {
    "concurrency": (distinct_int_list(4096), [1]),
    # auto: perf_analyzer when it is on PATH, else builtin (the bench stage resolves it).
    "tool": (one_of("auto", "builtin", "perf_analyzer"), "auto"),
    "measurement_interval_ms": (integer(50, 600_000), 5000),  # at most 10 min per window
    "stability_percentage": (bounded(100), 10.0),
    "max_trials": (integer(3, 100), 10),
    "warmup_requests": (integer(0, 100_000), 10),
    "request_timeout_s": (integer(1, 3600), 60),
    "prompts": (optional(path_text), None),
    "num_prompts": (integer(1, 100_000), 100),
    "input_tokens": (integer(1, SEQ), 32),
    "seed": (integer(0, 2**32 - 1), 0),
}

ENCODER_BLOCKS: dict[str, dict[str, tuple[Check, Any]]] = {
    "export": {
        "opset": (integer(17, 23), 18),
        "pooling": (one_of("mean", "cls"), "mean"),
        "normalize": (boolean, True),
    },
    "engine": {
        "max_batch_size": (integer(1, BATCH), REQUIRED),
        "max_seq_len": (integer(1, SEQ), REQUIRED),
        "opt_batch_size": (integer(1, BATCH), None),
        "opt_seq_len": (integer(1, SEQ), None),
        "precision": (one_of("fp32", "fp16", "bf16", "int8", "best"), "fp32"),
        "calibration_cache": (optional(path_text), None),
        "timing_cache": (boolean, True),
        "workspace_mb": (integer(1, 1 << 20), None),
        "flags": (scalar_map, {}),
        "extra_args": (str_list, []),
    },
    "triton": {
        "max_batch_size": (integer(1, BATCH), REQUIRED),
        "instance_count": (integer(1, INSTANCES), 1),
        "max_queue_delay_us": (integer(0, QUEUE_US), 100),
    },
    "bench": {
        **BENCH_COMMON,
        "batch_size": (integer(1, BATCH), 1),
    },
}
# Keys that only mean something for one family or modality.
_TEXT_ONLY: dict[str, tuple[str, ...]] = {"engine": ("max_seq_len", "opt_seq_len")}
_BERT_ONLY: dict[str, tuple[str, ...]] = {"export": ("pooling",)}


def encoder_blocks(family: str) -> dict[str, dict[str, tuple[Check, Any]]]:
    """The encoder field tables for one family: an image has no sequence, only BERT pools."""
    image = family in IMAGE_FAMILIES
    drop: dict[str, tuple[str, ...]] = dict(_TEXT_ONLY) if image else {}
    if family != "bert":
        drop["export"] = _BERT_ONLY["export"]
    blocks = {block: {k: v for k, v in fields.items() if k not in drop.get(block, ())} for block, fields in ENCODER_BLOCKS.items()}
    if image:
        del blocks["bench"]
    return blocks


ENSEMBLE_BLOCKS: dict[str, dict[str, tuple[Check, Any]]] = {
    "members": {role: (optional(text), None) for role in MEMBER_ROLES},
    "triton": {
        "max_batch_size": (integer(1, BATCH), REQUIRED),
        "instance_count": (integer(1, INSTANCES), 1),
    },
}
# Optional: only an ensemble whose file has an index: block gets index:<m> and <m>_search.
INDEX_FIELDS: dict[str, tuple[Check, Any]] = {
    "member": (one_of(*MEMBER_ROLES), REQUIRED),
    "corpus": (path_text, REQUIRED),
    "top_k": (integer(1, 1000), 5),
    "batch_size": (integer(1, BATCH), 8),
}
LLM_BLOCKS: dict[str, dict[str, tuple[Check, Any]]] = {
    "convert": {
        "dtype": (one_of("float16", "bfloat16", "float32"), "float16"),
        "tp_size": (integer(1, RANKS), 1),
        "pp_size": (integer(1, RANKS), 1),
    },
    "engine": {
        "max_batch_size": (integer(1, BATCH), REQUIRED),
        "max_input_len": (integer(1, SEQ), REQUIRED),
        "max_output_len": (integer(1, SEQ), REQUIRED),
        "max_beam_width": (integer(1, 1024), 1),
        "max_num_tokens": (optional(integer(1, TOKENS)), None),
        "flags": (scalar_map, {}),
        "encoder_flags": (scalar_map, {}),
        "decoder_flags": (scalar_map, {}),
        "extra_args": (str_list, []),
    },
    "triton": {
        "max_batch_size": (integer(1, BATCH), REQUIRED),
        "decoupled": (boolean, False),
        "instance_count": (integer(1, INSTANCES), 1),
        "max_queue_delay_us": (integer(0, QUEUE_US), 0),
        "kv_cache_free_gpu_mem_fraction": (fraction, 0.8),
        "cross_kv_cache_fraction": (fraction, 0.5),
        "batch_scheduler_policy": (one_of("guaranteed_no_evict", "max_utilization"), "guaranteed_no_evict"),
        "max_tokens_in_paged_kv_cache": (optional(integer(1, TOKENS)), None),
        "gpus": (optional(gpu_list), None),
    },
    "bench": {
        **BENCH_COMMON,
        "tool": (one_of(*BENCH_TOOLS), "builtin"),
        "model": (one_of("ensemble", "tensorrt_llm_bls"), "ensemble"),
        "output_tokens": (integer(1, SEQ), 16),
        "ignore_eos": (boolean, False),
    },
}
_MEMBERS = "only a kind: ensemble model has members"
_INDEX = "only a kind: ensemble model has an index (index.member names one of its members)"
NOT_FOR = {
    "encoder": {"convert": "encoders are exported to ONNX (export:), not converted", "members": _MEMBERS, "index": _INDEX},
    "llm": {
        "export": "LLM checkpoints are converted (convert:), not exported to ONNX",
        "members": _MEMBERS,
        "index": _INDEX,
    },
    "ensemble": {
        "family": "an ensemble has no family; its members (members:) have one",
        "source": "an ensemble has no checkpoint; it serves its members' artifacts",
        "export": "an ensemble is built from its members' artifacts; export: belongs in their files",
        "convert": "an ensemble is built from its members' artifacts; convert: belongs in their files",
        "engine": "an ensemble is built from its members' artifacts; engine: belongs in their files",
        "bench": "benchmarks of an ensemble are not implemented yet; benchmark its members (bench: in their files)",
        "sweep": "an ensemble is built from its members' artifacts; it has nothing of its own to sweep",
        "compare": "an ensemble has no variants to compare",
    },
}
IMAGE_NOT_FOR = {"bench": "benchmarks of image encoders are not implemented yet (no image workload); remove bench:"}


def kind_blocks(kind: str, family: str) -> dict[str, dict[str, tuple[Check, Any]]]:
    if kind == "encoder":
        return encoder_blocks(family)
    return LLM_BLOCKS if kind == "llm" else ENSEMBLE_BLOCKS


def _not_for(kind: str, family: str) -> dict[str, str]:
    return {**NOT_FOR[kind], **(IMAGE_NOT_FOR if family in IMAGE_FAMILIES else {})}


def check_block(raw: Any, fields: Mapping[str, tuple[Check, Any]], where: Where) -> dict[str, Any]:  # noqa: ANN401
    """Validate one block against its field table and fill in defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise where.error(f"expected a mapping, got {shown(raw)}")
    for key in raw:
        if key not in fields:
            raise where.child(str(key)).error(f"unknown key (known: {', '.join(fields)})")
    out: dict[str, Any] = {}
    for key, (check, default) in fields.items():
        if key in raw:
            out[key] = check(raw[key], where.child(key))
        elif default is REQUIRED:
            raise where.child(key).error("required key is missing")
        else:
            out[key] = default
    return out


def _check_precision(engine: dict[str, Any], where: Where) -> None:
    # int8 without calibration scales builds a plan whose outputs are noise: refuse it.
    if engine["precision"] == "int8" and engine["calibration_cache"] is None:
        msg = "required when engine.precision is int8: a TensorRT calibration cache file (trtexec --calib), relative to the model file"
        raise where.child("calibration_cache").error(msg)
    if engine["calibration_cache"] is not None and engine["precision"] not in ("int8", "best"):
        msg = f"only used with engine.precision int8 or best (trtexec --calib), but precision is {engine['precision']}; remove it"
        raise where.child("calibration_cache").error(msg)


def _check_encoder_engine(engine: dict[str, Any], where: Where) -> None:
    _check_precision(engine, where)
    for opt, limit in (("opt_batch_size", "max_batch_size"), ("opt_seq_len", "max_seq_len")):
        if limit not in engine:
            continue
        if engine[opt] is None:
            engine[opt] = engine[limit]
        elif engine[opt] > engine[limit]:
            msg = f"expected an integer <= engine.{limit} ({engine[limit]}), got {engine[opt]}"
            raise where.child(opt).error(msg)
    problem = trtexec.check_flags(engine["flags"], trtexec.static_table())
    if problem:
        raise where.child(f"flags.{problem[0]}").error(problem[1])


def _check_triton(triton: dict[str, Any], engine: dict[str, Any], where: Where) -> None:
    # The TRT-LLM backend silently keeps the engine's limit when the pbtxt asks for more.
    if triton["max_batch_size"] > engine["max_batch_size"]:
        msg = f"expected <= engine.max_batch_size ({engine['max_batch_size']}), got {triton['max_batch_size']}"
        raise where.child("max_batch_size").error(msg)


def _check_llm(blocks: dict[str, dict[str, Any]], family: str, where: Where) -> None:
    convert = blocks["convert"]
    if family != "t5":
        for key in ("encoder_flags", "decoder_flags"):
            if blocks["engine"][key]:
                raise where.child(f"engine.{key}").error(
                    f"only for encoder-decoder models (family t5); a {family} model has one engine: use engine.flags"
                )
    if family == "t5" and convert["pp_size"] != 1:
        msg = (
            "expected 1 for encoder-decoder models (TRT-LLM's C++ runtime and Triton do not support "
            f"pipeline parallelism for enc-dec; use tp_size), got {convert['pp_size']}"
        )
        raise where.child("convert.pp_size").error(msg)
    gpus = blocks["triton"]["gpus"]
    world = convert["tp_size"] * convert["pp_size"]
    if gpus is not None and len(gpus) != world:
        msg = f"expected tp_size x pp_size = {world} GPU indices (one per rank), got {len(gpus)}: {gpus}"
        raise where.child("triton.gpus").error(msg)
    problem = trtllm_argv.check_engine_flags(blocks["engine"], family)
    if problem is not None:
        raise where.child(f"engine.{problem[0]}").error(problem[1])


def _check_bench(blocks: dict[str, dict[str, Any]], kind: str, written: Any, where: Where) -> None:  # noqa: ANN401 - raw YAML
    bench, engine = blocks["bench"], blocks["engine"]
    limit = "max_seq_len" if kind == "encoder" else "max_input_len"
    written = written if isinstance(written, dict) else {}
    # Defaults never exceed the engine's limits; only values the user wrote can.
    if "input_tokens" not in written:
        bench["input_tokens"] = min(bench["input_tokens"], engine[limit])
    if kind == "llm" and "output_tokens" not in written:
        bench["output_tokens"] = min(bench["output_tokens"], engine["max_output_len"])
    if bench["input_tokens"] > engine[limit]:
        raise where.child("input_tokens").error(f"expected <= engine.{limit} ({engine[limit]}), got {bench['input_tokens']}")
    if kind == "llm" and bench["output_tokens"] > engine["max_output_len"]:
        msg = f"expected <= engine.max_output_len ({engine['max_output_len']}), got {bench['output_tokens']}"
        raise where.child("output_tokens").error(msg)
    if "batch_size" in bench and bench["batch_size"] > blocks["triton"]["max_batch_size"]:
        msg = f"expected <= triton.max_batch_size ({blocks['triton']['max_batch_size']}), got {bench['batch_size']}"
        raise where.child("batch_size").error(msg)


def _check_members(members: dict[str, Any], where: Where) -> None:
    named = [m for m in members.values() if m is not None]
    if not named:
        raise where.error(f"expected at least one of {', '.join(MEMBER_ROLES)}: the name of a model file in the same folder")
    if len(set(named)) != len(named):
        raise where.error(f"expected different models per role, got {named}")


def _check_index(raw: Any, blocks: dict[str, dict[str, Any]], where: Where) -> dict[str, Any]:  # noqa: ANN401 - raw YAML
    index = check_block(raw, INDEX_FIELDS, where)
    member = blocks["members"][index["member"]]
    if member is None:
        raise where.child("member").error(f"expected a role named in members: ({', '.join(r for r, m in blocks['members'].items() if m)})")
    if index["batch_size"] > blocks["triton"]["max_batch_size"]:
        msg = f"expected <= triton.max_batch_size ({blocks['triton']['max_batch_size']}), got {index['batch_size']}"
        raise where.child("batch_size").error(msg)
    return index


def check_blocks(data: dict[str, Any], kind: str, family: str, where: Where) -> dict[str, dict[str, Any]]:
    """Every block of ``kind`` validated, defaults filled, cross-checked."""
    for key, why in _not_for(kind, family).items():
        if key in data:
            raise where.child(key).error(why)
    blocks = {block: check_block(data.get(block), fields, where.child(block)) for block, fields in kind_blocks(kind, family).items()}
    if kind == "ensemble":
        _check_members(blocks["members"], where.child("members"))
        if "index" in data:
            blocks["index"] = _check_index(data["index"], blocks, where.child("index"))
        return blocks
    if kind == "encoder":
        _check_encoder_engine(blocks["engine"], where.child("engine"))
    else:
        _check_llm(blocks, family, where)
    _check_triton(blocks["triton"], blocks["engine"], where.child("triton"))
    if "bench" in blocks:
        _check_bench(blocks, kind, data.get("bench"), where.child("bench"))
    return blocks
