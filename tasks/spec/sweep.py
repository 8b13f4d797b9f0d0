"""``sweep:``: one model file, several builds - one variant per point of the cartesian product.

``sweep: {engine.max_batch_size: [8, 32], engine.max_num_tokens: [4096, 8192]}`` gives four
variants named ``<model>@max_batch_size-8,max_num_tokens-4096`` and so on: the last part of each
dotted path (the whole path when two paths end alike), a dash, the value.  Not ``key=value``:
doit reads any command-line word holding ``=`` as a variable, so such a task could not be named.
Each point is applied to the file's own data, and the result is validated like any model file,
so a point that breaks a rule (``triton.max_batch_size`` above the engine's) is an error naming it.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.core.errors import YamlError, shown, shown_key

# Blocks a sweep may change; fetch sources and benchmark settings are the same for every variant.
SWEEP_BLOCKS = ("convert", "export", "engine", "triton")
# Fields that are mappings of tool flags: a path may name one flag inside them.
FLAG_FIELDS = ("flags", "encoder_flags", "decoder_flags")
VALUE_RE = re.compile(r"[A-Za-z0-9._+]{1,64}")
# Every variant is a build of its own (engines, repositories, benchmarks): a few hundred is already days of work.
MAX_VARIANTS = 256


@dataclass(frozen=True)
class Point:
    """One variant: the value of every swept path, and how each is spelled in names."""

    values: Mapping[str, Any]  # dotted path -> value, in the file's order
    labels: Mapping[str, str]  # dotted path -> "max_batch_size-8"

    def name(self, model: str, blocks: Sequence[str] | None = None) -> str:
        """``model@label,label`` over the paths in ``blocks`` (all when None); ``model`` when none apply."""
        parts = [label for path, label in self.labels.items() if blocks is None or path.split(".", 1)[0] in blocks]
        return f"{model}@{','.join(parts)}" if parts else model


def base_name(variant: str) -> str:
    """``flan-t5`` of ``flan-t5@max_batch_size-8,...`` (a model name is its own base)."""
    return variant.split("@", 1)[0]


def check_path(path: Any, fields: Mapping[str, Mapping[str, Any]], file: str) -> list[str]:  # noqa: ANN401 - raw YAML key
    """``block.key`` (or ``block.flags.<flag>``) naming a field the model's kind has."""
    parts = str(path).split(".")
    block = parts[0]
    path = shown_key(str(path))
    if block not in SWEEP_BLOCKS or block not in fields:
        sweepable = ", ".join(b for b in SWEEP_BLOCKS if b in fields)
        raise YamlError(
            file, f"sweep.{path}", f"expected a dotted path into one of this model's blocks ({sweepable}), e.g. engine.max_batch_size"
        )
    if len(parts) < 2 or parts[1] not in fields[block]:  # noqa: PLR2004 - block.key
        raise YamlError(file, f"sweep.{path}", f"unknown key (known in {block}: {', '.join(fields[block])})")
    nested = parts[1] in FLAG_FIELDS
    if (nested and len(parts) != 3) or (not nested and len(parts) != 2):  # noqa: PLR2004
        shape = f"{block}.{parts[1]}.<flag>" if nested else f"{block}.{parts[1]}"
        raise YamlError(file, f"sweep.{path}", f"expected {shape}")
    return parts


def value_text(value: Any, file: str, path: str) -> str:  # noqa: ANN401 - raw YAML value
    """How a value is spelled in variant, task and directory names."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float) and math.isfinite(value):
        return format(value, "g")
    if isinstance(value, int) and abs(value) < 2**63:
        return str(value)
    if isinstance(value, str) and VALUE_RE.fullmatch(value):
        return value
    msg = f"expected numbers, true/false, null or words of 1-64 of [A-Za-z0-9._+] (they name variants and folders), got {shown(value)}"
    raise YamlError(file, f"sweep.{path}", msg)


def _labels(paths: Sequence[str]) -> dict[str, str]:
    """The last part of each path, or the whole path where two paths share their last part."""
    ends = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (end if ends.count(end) == 1 else p) for p, end in zip(paths, ends, strict=True)}


def check_sweep(raw: Any, data: Mapping[str, Any], fields: Mapping[str, Mapping[str, Any]], file: str) -> dict[str, list[Any]]:  # noqa: ANN401
    """The ``sweep:`` mapping: known paths, not also written in their block, lists of distinct values."""
    if not isinstance(raw, dict) or not raw:
        raise YamlError(file, "sweep", "expected a mapping of dotted paths to lists of values, e.g. {engine.max_batch_size: [8, 32]}")
    # Counted before anything is expanded: a typo's 560,000 points must fail at once, not fill memory.
    count = math.prod(len(values) for values in raw.values() if isinstance(values, list))
    if count > MAX_VARIANTS:
        sizes = " x ".join(str(len(v)) for v in raw.values() if isinstance(v, list))
        raise YamlError(file, "sweep", f"expands to {count:,} variants ({sizes} values); at most {MAX_VARIANTS}")
    out: dict[str, list[Any]] = {}
    for path, values in raw.items():
        parts = check_path(path, fields, file)
        if _written(data, parts):
            msg = f"{'.'.join(parts)} is also set in {parts[0]}:; write it in one place (remove it from {parts[0]}: or from sweep:)"
            raise YamlError(file, f"sweep.{path}", msg)
        if not isinstance(values, list) or not values:
            raise YamlError(file, f"sweep.{shown_key(str(path))}", f"expected a non-empty list of values, got {shown(values)}")
        texts = [value_text(v, file, str(path)) for v in values]
        if len(set(texts)) != len(texts):
            raise YamlError(file, f"sweep.{path}", f"expected each value once, got {shown(values)}")
        out[str(path)] = list(values)
    return out


def _written(data: Mapping[str, Any], parts: Sequence[str]) -> bool:
    node: Any = data
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def points(sweep: Mapping[str, Sequence[Any]], file: str) -> list[Point]:
    """Every point of the cartesian product, in the file's order of paths and values."""
    paths = list(sweep)
    labels = _labels(paths)
    out = []
    for combo in itertools.product(*(sweep[p] for p in paths)):
        values = dict(zip(paths, combo, strict=True))
        out.append(Point(values, {p: f"{labels[p]}-{value_text(v, file, p)}" for p, v in values.items()}))
    return out


def apply(data: Mapping[str, Any], point: Point) -> dict[str, Any]:
    """The model file's data with the point's values written in (``sweep:`` itself removed)."""
    out = copy.deepcopy({k: v for k, v in data.items() if k not in ("sweep", "compare")})
    for path, value in point.values.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if child is None:
                node[part] = child = {}
            if not isinstance(child, dict):
                break  # the block itself is malformed; validating the file reports it
            node = child
        else:
            node[leaf] = value
    return out
