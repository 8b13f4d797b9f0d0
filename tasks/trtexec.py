"""trtexec: its flag tables, what the installed binary says about itself, and the argv we pass.

Flags are checked before any GPU time is spent.  A CPU-only machine (CI) checks
against the static table of the pinned TensorRT version; where trtexec is installed
its ``--help`` is read once per binary (cached by path, size and mtime) and is the
authority for whatever version is there.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tasks import fsops, versions
from tasks.errors import UserError

# TensorRT of the pinned image (docker/versions.env), major.minor: the static table's key.
PINNED_VERSION = versions.tensorrt_minor()
_TABLES = Path(__file__).parent / "flagtables"
_CACHE = Path("build/.cache/trtexec-help.json")
_BANNER = re.compile(r"\[TensorRT v(\d+)\]")
_HELP_FLAG = re.compile(r"^\s*(--[A-Za-z][A-Za-z0-9]*)(=|,|\s|$)")
_ALIAS = re.compile(r",\s*(--[A-Za-z][A-Za-z0-9]*)")

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


@dataclass(frozen=True)
class FlagTable:
    """Known and removed flags of one trtexec version."""

    version: str
    flags: Mapping[str, str]
    removed: Mapping[str, str]
    source: str


@cache
def static_table(version: str = PINNED_VERSION) -> FlagTable:
    path = _TABLES / f"trtexec-{version}.json"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("trtexec-") for p in _TABLES.glob("trtexec-*.json"))
        msg = f"no trtexec flag table for TensorRT {version} (tables: {', '.join(known)})"
        raise UserError("trtexec", msg)
    data = json.loads(path.read_text(encoding="utf-8"))
    return FlagTable(data["version"], data["flags"], data["removed"], f"table {path.name}")


def version_from_banner(text: str) -> str | None:
    """``[TensorRT v101401]`` -> ``10.14.1``."""
    match = _BANNER.search(text)
    if match is None:
        return None
    number = int(match.group(1))
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def parse_help(text: str) -> dict[str, str]:
    """Flag names listed in ``trtexec --help``.

    The help text does not say reliably whether a flag takes a value (some value
    flags are listed without ``=``), so the kind comes from the static table when
    the flag is there, ``value`` when the help shows ``=``, and ``any`` otherwise.
    """
    known = static_table().flags
    flags: dict[str, str] = {}
    for line in text.splitlines():
        match = _HELP_FLAG.match(line)
        if match is None:
            continue
        main = match.group(1).removeprefix("--")
        kind = known.get(main, "value" if match.group(2) == "=" else "any")
        for alias in [main, *(a.removeprefix("--") for a in _ALIAS.findall(line.strip().split("  ")[0]))]:
            flags.setdefault(alias, kind)
    return flags


def installed_table(binary: Path) -> FlagTable:
    """The flag table of the installed binary, from its --help (cached per binary)."""
    st = binary.stat()
    key = f"{binary}|{st.st_size}|{st.st_mtime_ns}"
    cached = fsops.read_json(_CACHE)
    entry: dict[str, Any] | None = cached.get(key) if isinstance(cached, dict) else None
    if entry is None:
        entry = _read_help(binary)
        fsops.write_json_atomic(_CACHE, {key: entry})
    version = str(entry["version"] or "unknown")
    flags: dict[str, str] = entry["flags"]
    if len(flags) < 10:  # noqa: PLR2004 - an unparsable help; fall back to the table
        return static_table(".".join(version.split(".")[:2]))
    return FlagTable(version, flags, static_table().removed, f"{binary} --help")


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
    if name in RESERVED:
        return f"set by the engine stage ({RESERVED[name]}); remove it from engine.flags"
    if name in table.removed:
        return f"{table.removed[name]} (trtexec of TensorRT {table.version}, {table.source})"
    if name not in table.flags:
        return f"not a trtexec flag in TensorRT {table.version} ({table.source}); use engine.extra_args to pass it unchecked"
    return None


def check_value(name: str, value: object, table: FlagTable) -> str | None:
    """Why ``name: value`` cannot be passed to this trtexec, or None."""
    problem = check_flag(name, table)
    if problem:
        return problem
    kind = table.flags[name]
    if kind == "switch" and not isinstance(value, bool):
        return f"is a switch: expected true or false, got {value!r}"
    if kind == "value" and isinstance(value, bool):
        return f"takes a value (--{name}=<value>), got {value!r}"
    return None


def flag_args(flags: Mapping[str, object], table: FlagTable) -> list[str]:
    """``{name: value}`` -> argv items; a switch takes ``true`` (``false`` drops it)."""
    argv: list[str] = []
    for name, value in flags.items():
        problem = check_value(name, value, table)
        if problem:
            raise UserError(f"engine.flags.{name}", problem)
        if isinstance(value, bool):
            argv += [f"--{name}"] if value else []
        else:
            argv.append(f"--{name}={value}")
    return argv
