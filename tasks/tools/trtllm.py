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
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tasks.core.errors import UserError
from tasks.tools import flagtable, toolchain, versions
from tasks.tools.flagtable import FlagSpec, FlagTable

log = logging.getLogger(__name__)

__all__ = ["FlagSpec", "FlagTable"]

# TensorRT-LLM of the pinned image (docker/versions.env); 1.2.x is the last line with trtllm-build.
PINNED_VERSION = versions.trtllm()
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


def render(name: str, value: object, spec: FlagSpec) -> list[str]:
    return flagtable.render(name, value, spec, TOOL.separator)


def flag_args(flags: Mapping[str, object], table: FlagTable, key: str = "engine.flags") -> list[str]:
    """``{name: value}`` -> argv items, every flag checked; errors name ``<key>.<flag>``."""
    return flagtable.flag_args(flags, table, TOOL, key)
