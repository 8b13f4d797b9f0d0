"""trtllm-build: what is particular to it (help parsing, argv, settings); the flag tables and their checks are ``tasks.tools.flagtable``.

Flags are checked before any GPU time is spent.  A CPU-only machine (CI) checks
against the static table of the pinned TensorRT-LLM version; where trtllm-build is
installed its ``--help`` is read once per binary (cached by path, size and mtime)
and is the authority for whatever version is there.  The version itself comes from
the ``tensorrt_llm`` package metadata (never from importing it: that loads CUDA).

trtllm-build is an argparse program, so flags are passed as ``--name value``;
plugin "features" take the strings ``enable``/``disable``, not store_true switches.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tasks.core.errors import UserError
from tasks.tools import flagtable, toolchain, versions
from tasks.tools.flagtable import FlagSpec, FlagTable

__all__ = ["FlagSpec", "FlagTable"]

log = logging.getLogger(__name__)

# TensorRT-LLM of the pinned image (docker/versions.env); 1.2.x is the last line with trtllm-build.
PINNED_VERSION = versions.trtllm()
COMPONENTS = ("encoder", "decoder")
_CACHE = Path("build/.cache/trtllm-build-help.json")
_NOT_INSTALLED = "not installed"
# Importing tensorrt_llm (which trtllm-build does first) logs "[TensorRT-LLM] TensorRT LLM version: 1.2.1";
# older releases spelled it "TensorRT-LLM version".
_BANNER = re.compile(r"TensorRT[- ]LLM version:?\s*v?(\d[0-9A-Za-z.+-]*)")
# argparse indents every option's invocation by exactly two spaces; wrapped help text is indented
# further, so a flag mentioned inside a description never looks like an option.
_OPTION_LINE = re.compile(r"^  (-[^\s].*)$")
_OPTION = re.compile(r"(--?[A-Za-z0-9][\w-]*)(?: (.+))?")
_MIN_HELP_FLAGS = 10
_TENSORRT_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12")

# Flags the engine stage derives from other engine keys or from the checkpoint; setting
# them in the flags would silently fight those keys.
RESERVED = {
    "checkpoint_dir": "input comes from the convert stage",
    "model_config": "input comes from the convert stage",
    "output_dir": "output path is managed by the engine stage",
    "build_config": "a build config file would override the engine.* limits; set those keys instead",
    "max_batch_size": "use engine.max_batch_size",
    "max_input_len": "use engine.max_input_len; the T5 decoder always gets 1",
    "max_seq_len": "use engine.max_output_len; the T5 decoder gets max_output_len + 1",
    "max_beam_width": "use engine.max_beam_width",
    "max_num_tokens": "use engine.max_num_tokens",
    "max_encoder_input_len": "use engine.max_input_len",
    "workers": "set from the checkpoint's world size",
    "paged_kv_cache": "deprecated alias of kv_cache_type, which the stage sets (T5 encoder disabled, decoder paged)",
}
# Flags that would leave the stage without engines to publish.
REFUSED = {"dry_run": "it builds no engine, and the engine stage must publish one; run trtllm-build --dry_run by hand"}
TOOL = flagtable.Tool("trtllm-build", "TensorRT-LLM", " ", RESERVED, "remove it from the flags", REFUSED)

# Why T5 needs a setting (TensorRT-LLM enc_dec README and Triton's encoder_decoder guide).
_WHY_FMHA = "TensorRT-LLM's fused multi-head attention does not implement T5's relative attention bias"
_WHY_ATTENTION = "encoder-decoder attention runs only through TensorRT-LLM's attention plugins, at the checkpoint dtype"
_WHY_PACKED = "the in-flight batching runtime behind Triton's tensorrt_llm backend runs encoder-decoder engines on packed inputs"
_WHY_KV = {
    "encoder": "the encoder runs once over the whole input and keeps no KV cache",
    "decoder": "Triton's tensorrt_llm backend serves encoder-decoder models only with a paged decoder KV cache",
}


def static_table(version: str = PINNED_VERSION) -> FlagTable:
    return flagtable.load_table(TOOL.name, TOOL.product, version)


# ---- the installed tool -------------------------------------------------------------------


def version_from_banner(text: str) -> str | None:
    """``[TensorRT-LLM] TensorRT LLM version: 1.2.1`` -> ``1.2.1``."""
    match = _BANNER.search(text)
    return match.group(1) if match else None


def _option_spec(invocation: str) -> tuple[list[str], FlagSpec] | None:
    """``--max_seq_len MAX_SEQ_LEN, --max_decoder_seq_len MAX_SEQ_LEN`` -> names and spec."""
    names: list[str] = []
    arg: str | None = None
    for part in re.split(r",\s+(?=-)", invocation):
        match = _OPTION.fullmatch(part.strip())
        if match is None:
            return None
        if match.group(1).startswith("--"):
            names.append(match.group(1).removeprefix("--"))
        # Python >= 3.13 prints the metavar once, after the last alias.
        arg = arg or match.group(2)
    if not names or names[0] == "help":
        return None
    nargs = "+" if arg and "..." in arg else None
    if arg is None:
        return names, FlagSpec("switch", aliases=tuple(names[1:]))
    if arg.startswith("{"):
        choices = tuple(arg[1 : arg.index("}")].split(","))
        return names, FlagSpec("choice", choices=choices, nargs=nargs, aliases=tuple(names[1:]))
    return names, FlagSpec("value", nargs=nargs, aliases=tuple(names[1:]))


def parse_help(text: str) -> dict[str, FlagSpec]:
    """Flags listed in ``trtllm-build --help``, keyed by their first long name.

    argparse shows ``{a,b,c}`` for flags with choices, a metavar for flags taking a
    value and nothing for store_true switches.  Whether a value is an int is not
    shown; that comes from the static table where the flag is there.
    """
    flags: dict[str, FlagSpec] = {}
    for line in text.splitlines():
        match = _OPTION_LINE.match(line)
        if match is None:
            continue
        invocation = re.split(r"\s{2,}", match.group(1), maxsplit=1)[0]
        parsed = _option_spec(invocation)
        if parsed is not None:
            flags.setdefault(parsed[0][0], parsed[1])
    return flags


def _merge(helped: FlagSpec, known: FlagSpec | None) -> FlagSpec:
    """The help's spec, with what the static table knows and the help cannot show."""
    if known is None or helped.kind != "value":
        return helped
    if known.kind == "choice":
        # Flags with a converter type (kv_cache_type) list no choices in the help.
        return replace(known, aliases=helped.aliases, nargs=helped.nargs)
    return replace(helped, value_type=known.value_type)


def _read_help(binary: Path) -> dict[str, Any]:
    argv = [str(binary), "--help"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(str(binary), f"cannot run trtllm-build --help: {exc}") from exc
    text = done.stdout + done.stderr
    flags = parse_help(text)
    return {"banner_version": version_from_banner(text), "flags": {name: asdict(spec) for name, spec in flags.items()}}


def _help_entry(binary: Path) -> dict[str, Any]:
    """The parsed ``--help`` of ``binary``; run once per binary path, size and mtime."""
    return flagtable.help_entry(binary, _CACHE, _read_help)


def _package_version(*dists: str) -> str | None:
    for dist in dists:
        version = toolchain.package_version(dist)
        if version != _NOT_INSTALLED:
            return version
    return None


def installed_version(binary: Path | None) -> str:
    """TensorRT-LLM version: package metadata, else the banner trtllm-build prints, else ``unknown``."""
    version = _package_version("tensorrt_llm")
    if version is not None:
        return version
    if binary is None:
        return _NOT_INSTALLED
    return _help_entry(binary)["banner_version"] or "unknown"


def installed_table(binary: Path) -> FlagTable:
    """The flag table of the installed trtllm-build, from its --help (cached per binary)."""
    entry = _help_entry(binary)
    version = installed_version(binary)
    helped = {name: FlagSpec.from_json(spec) for name, spec in entry["flags"].items()}
    if len(helped) < _MIN_HELP_FLAGS:
        log.warning("%s --help lists %d flags; checking flags against the static table instead", binary, len(helped))
        return static_table(version)
    static = static_table()
    flags = {name: _merge(spec, static.flags.get(name)) for name, spec in helped.items()}
    listed = set(flags) | {alias for spec in flags.values() for alias in spec.aliases}
    # A flag the installed version still lists is not removed there, whatever the pinned table says.
    return flagtable.make_table(version, flags, f"{binary} --help", static.rules.without(listed), header=static.header)


def trt_fingerprint() -> dict[str, str]:
    """TensorRT-LLM and TensorRT versions and the GPU: engines run only where all of them match."""
    tensorrt = _package_version(*_TENSORRT_DISTS) or _NOT_INSTALLED
    return {
        "tensorrt_llm": installed_version(toolchain.find_trtllm_build()),
        "tensorrt": tensorrt,
        **toolchain.gpu(),
        **toolchain.container(),
    }


# ---- checking and rendering flags ---------------------------------------------------------


def check_flag(name: str, table: FlagTable) -> str | None:
    """Why ``name`` cannot be used with this trtllm-build, or None."""
    return flagtable.check_flag(name, table, TOOL)


def check_value(name: str, value: object, table: FlagTable) -> str | None:
    """Why ``name: value`` cannot be passed to this trtllm-build, or None."""
    return flagtable.check_value(name, value, table, TOOL)


def _render(name: str, value: object, spec: FlagSpec) -> list[str]:
    return flagtable.render(name, value, spec, TOOL.separator)


def flag_args(flags: Mapping[str, object], table: FlagTable, key: str = "engine.flags") -> list[str]:
    """``{name: value}`` -> argv items, every flag checked; errors name ``<key>.<flag>``."""
    return flagtable.flag_args(flags, table, TOOL, key)


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
            extra[name] = _render(name, value, table.flags[name])
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
