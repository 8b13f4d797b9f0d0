"""trtllm-build's command lines per family (T5 encoder and decoder; GPT-2, Llama, Gemma) and the flags Triton requires."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tasks.core.errors import UserError
from tasks.tools.flagtable import FlagTable
from tasks.tools.trtllm import check_value, render, static_table

COMPONENTS = ("encoder", "decoder")

# Why T5 needs a setting (TensorRT-LLM enc_dec README and Triton's encoder_decoder guide).
_WHY_FMHA = "TensorRT-LLM's fused multi-head attention does not implement T5's relative attention bias"
_WHY_ATTENTION = "encoder-decoder attention runs only through TensorRT-LLM's attention plugins, at the checkpoint dtype"
_WHY_PACKED = "the in-flight batching runtime behind Triton's tensorrt_llm backend runs encoder-decoder engines on packed inputs"
_WHY_KV = {
    "encoder": "the encoder runs once over the whole input and keeps no KV cache",
    "decoder": "Triton's tensorrt_llm backend serves encoder-decoder models only with a paged decoder KV cache",
}


# ---- T5 -----------------------------------------------------------------------------------


def t5_requirements(component: str, dtype: str | None) -> dict[str, tuple[str, str]]:
    """Settings a T5 ``component`` build cannot do without: flag -> (value, why).

    ``dtype`` None (not known yet, e.g. when the YAML is loaded) leaves out the
    plugin dtypes, which must equal the converted checkpoint's dtype.
    """
    required = {"context_fmha": ("disable", _WHY_FMHA), "remove_input_padding": ("enable", _WHY_PACKED)}
    if dtype is not None:
        why = f"{_WHY_ATTENTION} ({dtype})"
        required |= {"bert_attention_plugin": (dtype, why), "gpt_attention_plugin": (dtype, why)}
    required["kv_cache_type"] = ("disabled" if component == "encoder" else "paged", _WHY_KV[component])
    return required


def _limits(component: str, engine: Mapping[str, Any]) -> list[tuple[str, str]]:
    if component == "encoder":
        return [("kv_cache_type", "disabled"), ("max_input_len", str(engine["max_input_len"]))]
    # Generation starts from decoder_start_token_id (input length 1); the encoder output's
    # length bounds cross-attention; max_seq_len counts that start token plus the output.
    return [
        ("kv_cache_type", "paged"),
        ("max_input_len", "1"),
        ("max_encoder_input_len", str(engine["max_input_len"])),
        ("max_seq_len", str(engine["max_output_len"] + 1)),
    ]


def _t5_settings(component: str, engine: Mapping[str, Any], dtype: str) -> list[tuple[str, str]]:
    """The T5 build settings in argv order (gemm_plugin and moe_plugin are defaults the flags may change)."""
    settings = [
        ("max_batch_size", str(engine["max_batch_size"])),
        ("max_beam_width", str(engine["max_beam_width"])),
        ("context_fmha", "disable"),
        ("bert_attention_plugin", dtype),
        ("gpt_attention_plugin", dtype),
        ("gemm_plugin", dtype),
        ("remove_input_padding", "enable"),
        ("moe_plugin", "disable"),
    ]
    if engine.get("max_num_tokens") is not None:
        settings.append(("max_num_tokens", str(engine["max_num_tokens"])))
    return settings + _limits(component, engine)


def _checked_flags(flags: Mapping[str, object], block: str, table: FlagTable) -> Iterator[tuple[str, object, str]]:
    """Checked (canonical name, value, YAML key) of one flags block."""
    for name, value in flags.items():
        key = f"{block}.{name}"
        problem = check_value(str(name), value, table)
        if problem:
            raise UserError(key, problem)
        yield table.canonical(str(name)), value, key


def _user_flags(component: str, engine: Mapping[str, Any], table: FlagTable) -> Iterator[tuple[str, object, str]]:
    """Checked (canonical name, value, YAML key) of engine.flags then engine.<component>_flags."""
    for block in ("flags", f"{component}_flags"):
        yield from _checked_flags(engine.get(block, {}), f"engine.{block}", table)


def t5_argv(  # noqa: PLR0917 - mirrors engine.trtexec_argv: paths and inputs in build order
    binary: Path,
    component: str,
    checkpoint_dir: Path,
    output_dir: Path,
    engine: Mapping[str, Any],
    dtype: str,
    table: FlagTable,
    *,
    workers: int = 1,
    timing_cache: Path | None = None,
) -> list[str]:
    """The full trtllm-build command for one T5 component.

    Order: paths, the T5 settings, ``--workers``, the timing cache, validated user
    flags (engine.flags, then engine.<component>_flags, which win), engine.extra_args.
    A user flag naming a setting replaces it in place unless T5 requires its value.
    """
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}")
    settings = _with_run_options(dict(_t5_settings(component, engine, dtype)), workers, timing_cache)
    required = t5_requirements(component, dtype)
    flags = _user_flags(component, engine, table)
    extra = _merge_flags(settings, flags, required, T5_REFUSAL.replace("{component}", component), table)
    return _command(binary, checkpoint_dir, output_dir, settings, extra, engine)


def _with_run_options(settings: dict[str, str], workers: int, timing_cache: Path | None) -> dict[str, str]:
    if workers > 1:
        settings["workers"] = str(workers)
    if timing_cache is not None:
        # Read (when it exists) and updated in place: the default, model.cache in the current
        # directory, would land in the project root and never be read again.
        settings["input_timing_cache"] = settings["output_timing_cache"] = str(timing_cache)
    return settings


def _merge_flags(
    settings: dict[str, str],
    flags: Iterator[tuple[str, object, str]],
    required: Mapping[str, tuple[str, str]],
    refusal: str,
    table: FlagTable,
) -> dict[str, list[str]]:
    """User flags into ``settings`` (a flag naming a setting replaces it in place); the rest returned as argv items.

    A flag contradicting ``required`` fails with ``refusal`` filled with ``name``, ``want`` and ``why``.
    """
    extra: dict[str, list[str]] = {}
    for name, value, key in flags:
        problem = conflict(name, value, required, refusal)
        if problem:
            raise UserError(key, problem)
        if name in settings:
            settings[name] = str(value)
        else:
            extra[name] = render(name, value, table.flags[name])
    return extra


def _command(  # noqa: PLR0917 - the parts of one command line, in order
    binary: Path,
    checkpoint_dir: Path,
    output_dir: Path,
    settings: Mapping[str, str],
    extra: Mapping[str, list[str]],
    engine: Mapping[str, Any],
) -> list[str]:
    argv = [str(binary), "--checkpoint_dir", str(checkpoint_dir), "--output_dir", str(output_dir)]
    for name, value in settings.items():
        argv += [f"--{name}", value]
    for items in extra.values():
        argv += items
    return argv + [str(arg) for arg in engine.get("extra_args", [])]


def check_engine_flags(engine: Mapping[str, Any], family: str = "t5") -> tuple[str, str] | None:
    """The first bad flag of an LLM ``engine:`` block, as (key relative to ``engine``, problem).

    Checked against the static table when the YAML is loaded, before anything runs;
    for T5 also against the settings it requires (plugin dtypes wait for the checkpoint).
    """
    table = static_table()
    for block in ("flags", "encoder_flags", "decoder_flags"):
        components = COMPONENTS if block == "flags" else (block.removesuffix("_flags"),)
        for name, value in engine.get(block, {}).items():
            problem = check_value(str(name), value, table)
            if problem is None and family == "t5":
                problem = _t5_conflict(table.canonical(str(name)), value, components)
            elif problem is None:
                problem = _decoder_conflict(table.canonical(str(name)), value)
            if problem:
                return f"{block}.{name}", problem
    return None


# Why a flag value is refused, filled with the flag, the value required and the reason.
T5_REFUSAL = "T5 requires {name} {want} for the {component}: {why}"
DECODER_REFUSAL = "Triton's tensorrt_llm backend requires {name} {want}: {why}"


def conflict(name: str, value: object, required: Mapping[str, tuple[str, str]], refusal: str) -> str | None:
    """``refusal`` filled in when ``required`` holds another value for ``name``, else None."""
    if name in required and str(value) != required[name][0]:
        want, why = required[name]
        return refusal.format(name=name, want=want, why=why)
    return None


def _decoder_conflict(name: str, value: object) -> str | None:
    return conflict(name, value, decoder_requirements(), DECODER_REFUSAL)


def _t5_conflict(name: str, value: object, components: tuple[str, ...]) -> str | None:
    for component in components:
        problem = conflict(name, value, t5_requirements(component, None), T5_REFUSAL.replace("{component}", component))
        if problem:
            return problem
    return None


# ---- decoder-only (GPT-2, Llama, Gemma) ---------------------------------------------------------

_WHY_INFLIGHT = "the tensorrt_llm backend's in-flight batching runs decoder engines only with a paged KV cache on packed inputs"
DECODER_FAMILIES = ("gpt2", "llama", "gemma")


def decoder_requirements() -> dict[str, tuple[str, str]]:
    """Settings a decoder-only engine served by Triton cannot do without: flag -> (value, why)."""
    return {"remove_input_padding": ("enable", _WHY_INFLIGHT), "kv_cache_type": ("paged", _WHY_INFLIGHT)}


def decoder_settings(family: str, engine: Mapping[str, Any], dtype: str) -> list[tuple[str, str]]:
    """A family's build settings in argv order: the ones its TRT-LLM example and Triton guide pass.

    Every family: attention and GEMM plugins at the checkpoint dtype, packed inputs, paged KV
    cache; the rope families (Llama, Gemma) also name fused attention, as their guides do.
    ``max_seq_len`` is the prompt plus the output.
    """
    if family not in DECODER_FAMILIES:
        raise ValueError(f"family must be one of {DECODER_FAMILIES}, got {family!r}")
    settings = [
        ("max_batch_size", str(engine["max_batch_size"])),
        ("max_beam_width", str(engine["max_beam_width"])),
        ("max_input_len", str(engine["max_input_len"])),
        ("max_seq_len", str(engine["max_input_len"] + engine["max_output_len"])),
        ("gpt_attention_plugin", dtype),
        ("gemm_plugin", dtype),
        ("remove_input_padding", "enable"),
        ("kv_cache_type", "paged"),
    ]
    if family != "gpt2":
        settings.append(("context_fmha", "enable"))
    if engine.get("max_num_tokens") is not None:
        settings.append(("max_num_tokens", str(engine["max_num_tokens"])))
    return settings


def decoder_argv(  # noqa: PLR0917 - mirrors t5_argv
    binary: Path,
    family: str,
    checkpoint_dir: Path,
    output_dir: Path,
    engine: Mapping[str, Any],
    dtype: str,
    table: FlagTable,
    *,
    workers: int = 1,
    timing_cache: Path | None = None,
) -> list[str]:
    """The full trtllm-build command of a decoder-only checkpoint (every rank in one run, ``--workers``).

    Order: paths, the family's settings, ``--workers``, the timing cache, validated user
    flags (``engine.flags``; a flag naming a setting replaces it in place unless serving
    requires its value), ``engine.extra_args``.
    """
    settings = _with_run_options(dict(decoder_settings(family, engine, dtype)), workers, timing_cache)
    flags = _checked_flags(engine.get("flags", {}), "engine.flags", table)
    extra = _merge_flags(settings, flags, decoder_requirements(), DECODER_REFUSAL, table)
    return _command(binary, checkpoint_dir, output_dir, settings, extra, engine)
