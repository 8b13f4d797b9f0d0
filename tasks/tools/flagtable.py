"""The flag-table core shared by trtexec and trtllm-build.

A tool's flags are checked before any GPU time is spent, against a table: the static
JSON table of the pinned version (``tasks/tools/flagtables/<tool>-<version>.json``, every one
with the same provenance header), or, where the tool is installed, the flags its
``--help`` lists (read once per binary, cached by path, size and mtime).  The tool
modules keep what is theirs: how their help text reads, which flags the engine stage
sets itself, and their settings; everything else is here.

A table knows, besides each flag's kind: flags that are gone (``removed``), names that
were never flags but look like one that is (``renamed``), flags still parsed but
deprecated (``deprecated``: accepted, with a warning), flags that only work together
with another (``requires``) and values the tool accepts but refuses when run
(``refused_values``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tasks.core import fsops, observe
from tasks.core.errors import UserError, shown

log = logging.getLogger(__name__)

TABLES = Path(__file__).parent / "flagtables"
HEADER = ("tool", "version", "source", "compiled", "note")
SOURCE_KEYS = ("repository", "path", "ref")


@dataclass(frozen=True)
class FlagSpec:
    """What one flag accepts: ``value`` (int/str), ``choice`` (one of choices), ``switch`` or ``any`` (help did not say)."""

    kind: str
    value_type: str = "str"
    choices: tuple[str, ...] = ()
    nargs: str | None = None
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> FlagSpec:
        """A spec from a table entry: an object, or just the kind (``"switch"``)."""
        if isinstance(data, str):
            return cls(data)
        return cls(
            kind=data["kind"],
            value_type=data.get("type", data.get("value_type", "str")),
            choices=tuple(data.get("choices", ())),
            nargs=data.get("nargs"),
            aliases=tuple(data.get("aliases", ())),
        )


@dataclass(frozen=True)
class Rules:
    """What a table knows beyond the flag kinds (see the module docstring)."""

    removed: Mapping[str, str] = field(default_factory=dict)
    renamed: Mapping[str, str] = field(default_factory=dict)
    deprecated: Mapping[str, str] = field(default_factory=dict)
    requires: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    refused_values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    unlisted: tuple[str, ...] = ()

    def without(self, listed: set[str]) -> Rules:
        """These rules for a version whose --help lists ``listed``: a listed flag is neither removed nor renamed there."""
        removed = {name: why for name, why in self.removed.items() if name not in listed}
        renamed = {name: to for name, to in self.renamed.items() if name not in listed}
        return Rules(removed, renamed, self.deprecated, self.requires, self.refused_values, self.unlisted)


@dataclass(frozen=True)
class FlagTable:
    """Known flags of one version of one tool, and where that knowledge comes from."""

    version: str
    flags: Mapping[str, FlagSpec]
    removed: Mapping[str, str]
    source: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    rules: Rules = field(default_factory=Rules)
    header: Mapping[str, Any] = field(default_factory=dict)

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)


@dataclass(frozen=True)
class Tool:
    """One tool's name, product, argv style and the flags its stage sets itself."""

    name: str
    product: str
    separator: str
    reserved: Mapping[str, str]
    reserved_hint: str
    refused: Mapping[str, str] = field(default_factory=dict)


def make_table(
    version: str,
    flags: Mapping[str, FlagSpec],
    source: str,
    rules: Rules,
    *,
    header: Mapping[str, Any] | None = None,
) -> FlagTable:
    aliases = {alias: name for name, spec in flags.items() for alias in spec.aliases}
    return FlagTable(version, dict(flags), dict(rules.removed), source, aliases, rules, dict(header or {}))


# ---- static tables -------------------------------------------------------------------------


def _check_header(data: Mapping[str, Any], shown: str) -> None:
    """Every table carries the same provenance header; a table without one is a packaging mistake."""
    missing = [key for key in HEADER if not data.get(key)]
    source = data.get("source")
    missing += [f"source.{key}" for key in SOURCE_KEYS if not isinstance(source, Mapping) or not source.get(key)]
    if missing:
        raise UserError(shown, f"flag table without provenance: missing {', '.join(missing)}")


def _rules(data: Mapping[str, Any]) -> Rules:
    return Rules(
        removed=data.get("removed", {}),
        renamed=data.get("renamed", {}),
        deprecated=data.get("deprecated", {}),
        requires=data.get("requires", {}),
        refused_values=data.get("refused_values", {}),
        unlisted=tuple(data.get("unlisted", ())),
    )


@cache
def load_table(tool: str, product: str, version: str) -> FlagTable:
    """The static table ``<tool>-<version>.json``, with its provenance header checked."""
    path = TABLES / f"{tool}-{version}.json"
    if not path.is_file():
        known = sorted(p.stem.removeprefix(f"{tool}-") for p in TABLES.glob(f"{tool}-*.json"))
        raise UserError(tool, f"no {tool} flag table for {product} {version} (tables: {', '.join(known)})")
    data = json.loads(path.read_text(encoding="utf-8"))
    _check_header(data, str(path))
    flags = {name: FlagSpec.from_json(spec) for name, spec in data["flags"].items()}
    header = {key: data[key] for key in HEADER}
    return make_table(data["version"], flags, f"table {path.name}", _rules(data), header=header)


# ---- the installed tool's --help ---------------------------------------------------------------


def help_entry(binary: Path, cache_file: Path, read: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """What ``read`` makes of ``binary --help``; run once per binary path, size and mtime."""
    observe.note(binary)  # a replaced binary changes a graph snapshot's inputs: the cache file below is not one
    st = binary.stat()
    key = f"{binary}|{st.st_size}|{st.st_mtime_ns}"
    cached = fsops.read_json(cache_file)
    entry: dict[str, Any] | None = cached.get(key) if isinstance(cached, dict) else None
    if entry is None:
        entry = read(binary)
        fsops.write_json_atomic(cache_file, {key: entry})
    return entry


# ---- checking and rendering ----------------------------------------------------------------------


def _where(tool: Tool, table: FlagTable) -> str:
    return f"{tool.name} of {tool.product} {table.version}, {table.source}"


def check_flag(name: str, table: FlagTable, tool: Tool) -> str | None:
    """Why ``name`` cannot be used with this tool, or None."""
    canonical = table.canonical(name)
    if canonical in tool.reserved:
        return f"set by the engine stage ({tool.reserved[canonical]}); {tool.reserved_hint}"
    if canonical in tool.refused:
        return f"not allowed here: {tool.refused[canonical]}"
    if canonical in table.removed:
        return f"{table.removed[canonical]} ({_where(tool, table)})"
    if canonical in table.rules.renamed:
        return f"not a {tool.name} flag in {tool.product} {table.version} ({table.source}); the flag is {table.rules.renamed[canonical]}"
    if canonical not in table.flags:
        return f"not a {tool.name} flag in {tool.product} {table.version} ({table.source}); use engine.extra_args to pass it unchecked"
    return None


def _check_kind(name: str, value: object, spec: FlagSpec, separator: str) -> str | None:
    if spec.kind == "switch":
        return None if isinstance(value, bool) else f"is a switch: expected true or false, got {shown(value)}"
    if spec.kind == "any":
        return None
    if isinstance(value, bool):
        return f"takes a value (--{name}{separator}<value>), got {shown(value)}"
    items = str(value).split() if spec.nargs else [value]
    if spec.kind == "choice":
        wrong = [item for item in items if str(item) not in spec.choices]
        return f"expected one of {', '.join(spec.choices)}, got {shown(value)}" if wrong else None
    if spec.value_type == "int" and not all(isinstance(item, int) or str(item).isdigit() for item in items):
        return f"takes an integer (--{name}{separator}<int>), got {shown(value)}"
    return None


def check_value(name: str, value: object, table: FlagTable, tool: Tool) -> str | None:
    """Why ``name: value`` cannot be passed to this tool, or None."""
    problem = check_flag(name, table, tool)
    if problem:
        return problem
    canonical = table.canonical(name)
    problem = _check_kind(name, value, table.flags[canonical], tool.separator)
    if problem:
        return problem
    refused = table.rules.refused_values.get(canonical, {})
    if str(value) in refused:
        return f"{canonical} {value} is refused: {refused[str(value)]} ({_where(tool, table)})"
    return None


def _is_set(value: object) -> bool:
    return value is not False and value is not None


def check_requires(flags: Mapping[str, object], table: FlagTable, tool: Tool) -> tuple[str, str] | None:
    """The first flag set without the flag it needs in the same block, as (flag, problem)."""
    given = {table.canonical(str(name)) for name, value in flags.items() if _is_set(value)}
    for name, value in flags.items():
        need = table.rules.requires.get(table.canonical(str(name)))
        if need is not None and _is_set(value) and need["flag"] not in given:
            return str(name), f"needs {need['flag']}: true in the same flags: {need['why']} ({_where(tool, table)})"
    return None


def deprecation(name: str, table: FlagTable, tool: Tool) -> str | None:
    """The warning a deprecated flag earns, or None."""
    why = table.rules.deprecated.get(table.canonical(name))
    return f"--{name} is deprecated in {tool.product} {table.version}: {why}" if why else None


def render(name: str, value: object, spec: FlagSpec, separator: str) -> list[str]:
    """The argv items of one checked flag; a switch takes ``true`` (``false`` drops it)."""
    if isinstance(value, bool):
        return [f"--{name}"] if value else []
    items = str(value).split() if spec.nargs else [str(value)]
    if separator == "=":
        return [f"--{name}={' '.join(items)}"]
    return [f"--{name}", *items]


def flag_args(flags: Mapping[str, object], table: FlagTable, tool: Tool, key: str = "engine.flags") -> list[str]:
    """``{name: value}`` -> argv items, every flag checked; errors name ``<key>.<flag>``; deprecated flags are logged."""
    argv: list[str] = []
    for name, value in flags.items():
        problem = check_value(str(name), value, table, tool)
        if problem:
            raise UserError(f"{key}.{name}", problem)
        warning = deprecation(str(name), table, tool)
        if warning:
            log.warning("%s.%s: %s", key, name, warning)
        canonical = table.canonical(str(name))
        argv += render(canonical, value, table.flags[canonical], tool.separator)
    missing = check_requires(flags, table, tool)
    if missing:
        raise UserError(f"{key}.{missing[0]}", missing[1])
    return argv
