"""trtexec: what is particular to it; the flag tables and their checks are ``tasks.tools.flagtable``.

Flags are checked before any GPU time is spent.  A CPU-only machine (CI) checks
against the static table of the pinned TensorRT version; where trtexec is installed
its ``--help`` is read once per binary (cached by path, size and mtime) and is the
authority for whatever version is there.  trtexec takes ``--name=value``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.core.errors import UserError
from tasks.tools import flagtable, toolchain, versions
from tasks.tools.flagtable import FlagSpec, FlagTable

__all__ = ["FlagSpec", "FlagTable"]

# TensorRT of the pinned image (docker/versions.env), major.minor: the static table's key.
PINNED_VERSION = versions.tensorrt_minor()
_CACHE = Path("build/.cache/trtexec-help.json")
_BANNER = re.compile(r"\[TensorRT v(\d+)\]")
_HELP_FLAG = re.compile(r"^\s*(--[A-Za-z][A-Za-z0-9]*)(=|,|\s|$)")
_ALIAS = re.compile(r",\s*(--[A-Za-z][A-Za-z0-9]*)")
_MIN_HELP_FLAGS = 10

# Flags the engine stage derives from other engine keys; setting them in engine.flags
# would silently fight those keys.
RESERVED = {
    "onnx": "input comes from the export stage",
    "saveEngine": "output path is managed by the engine stage",
    "minShapes": "derived from engine.max_batch_size / max_seq_len",
    "optShapes": "derived from engine.opt_batch_size / opt_seq_len",
    "maxShapes": "derived from engine.max_batch_size / max_seq_len",
    "skipInference": "always passed; the stage only builds",
    "fp16": "use engine.precision",
    "bf16": "use engine.precision",
    "best": "use engine.precision",
    "int8": "use engine.precision",
    "memPoolSize": "use engine.workspace_mb",
}
TOOL = flagtable.Tool("trtexec", "TensorRT", "=", RESERVED, "remove it from engine.flags")


def static_table(version: str = PINNED_VERSION) -> FlagTable:
    return flagtable.load_table(TOOL.name, TOOL.product, version)


def version_from_banner(text: str) -> str | None:
    """``[TensorRT v101401]`` -> ``10.14.1``."""
    match = _BANNER.search(text)
    if match is None:
        return None
    number = int(match.group(1))
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def parse_help(text: str) -> dict[str, str]:
    """Flag names listed in ``trtexec --help``, with their kind.

    The help text does not say reliably whether a flag takes a value (some value
    flags are listed without ``=``), so the kind comes from the static table when
    the flag is there, ``value`` when the help shows ``=``, and ``any`` otherwise.
    """
    known = static_table().flags
    flags: dict[str, str] = {}
    for line in text.splitlines():
        match = _HELP_FLAG.match(line)
        if match is None or match.group(1) == "--help":
            continue
        main = match.group(1).removeprefix("--")
        kind = known[main].kind if main in known else "value" if match.group(2) == "=" else "any"
        for alias in [main, *(a.removeprefix("--") for a in _ALIAS.findall(line.strip().split("  ")[0]))]:
            flags.setdefault(alias, kind)
    return flags


def installed_table(binary: Path) -> FlagTable:
    """The flag table of the installed binary, from its --help (cached per binary)."""
    entry = flagtable.help_entry(binary, _CACHE, _read_help)
    version = str(entry["version"] or "unknown")
    helped: dict[str, str] = entry["flags"]
    if len(helped) < _MIN_HELP_FLAGS:  # an unparsable help; fall back to the table
        return static_table(".".join(version.split(".")[:2]))
    static = static_table()
    flags = {name: FlagSpec(kind) for name, kind in helped.items()}
    # Flags the parser still takes but the help no longer prints (deprecated ones) stay known.
    flags |= {name: static.flags[name] for name in static.rules.unlisted if name not in flags}
    return flagtable.make_table(version, flags, f"{binary} --help", static.rules.without(set(helped)), header=static.header)


def _read_help(binary: Path) -> dict[str, Any]:
    argv = [str(binary), "--help"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise UserError(str(binary), f"cannot run trtexec --help: {exc}") from exc
    text = done.stdout + done.stderr
    return {"version": version_from_banner(text), "flags": parse_help(text)}


def check_flag(name: str, table: FlagTable) -> str | None:
    """Why ``name`` cannot be used with this trtexec, or None."""
    return flagtable.check_flag(name, table, TOOL)


def check_value(name: str, value: object, table: FlagTable) -> str | None:
    """Why ``name: value`` cannot be passed to this trtexec, or None."""
    return flagtable.check_value(name, value, table, TOOL)


def check_flags(flags: Mapping[str, object], table: FlagTable) -> tuple[str, str] | None:
    """The first bad flag of ``engine.flags`` (its name, the problem), each alone and together."""
    for name, value in flags.items():
        problem = check_value(str(name), value, table)
        if problem:
            return str(name), problem
    return flagtable.check_requires(flags, table, TOOL)


def precision_note(precision: str, table: FlagTable) -> str | None:
    """The deprecation the engine stage's own precision flag earns in this TensorRT, or None."""
    return flagtable.deprecation(precision, table, TOOL)


def flag_args(flags: Mapping[str, object], table: FlagTable) -> list[str]:
    """``{name: value}`` -> argv items; a switch takes ``true`` (``false`` drops it)."""
    return flagtable.flag_args(flags, table, TOOL)


def trt_fingerprint() -> dict[str, str]:
    """TensorRT version (from the installed trtexec) and GPU: a plan runs only where both match."""
    binary = toolchain.find_trtexec()
    version = installed_table(binary).version if binary else toolchain.package_version("tensorrt")
    return {"tensorrt": version, **toolchain.gpu(), **toolchain.container()}
