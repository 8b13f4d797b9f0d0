"""The record every hostile-input case is, and the helpers the per-category tables build them with.

A case copies a project whose model ``tiny`` is already built, writes its files (a model file ``bad`` by
default, or checkpoint damage), runs one doit command and expects one ``ERROR:`` line naming ``file`` and
``key``.  What counts as the outcome and how it is judged is ``tests.faults.runner``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# The model under attack; its checkpoint is a copy of tiny's in ckpts/bad, written relative to the model file.
BAD = "models/bad.yaml"
BAD_YAML = """\
name: bad
kind: encoder
family: bert
source:
  path: ../ckpts/bad
export:
  opset: 18
engine:
  max_batch_size: 8
  max_seq_len: 32
triton:
  max_batch_size: 8
"""
# Load-time cases only read the graph: a case the product wrongly accepts costs a second, not a build.
LIST = ("list", "target=cpu")
BUILD = ("build:bad", "target=cpu")


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    broken: str  # what is wrong, in the user's words
    files: dict[str, str | bytes] = field(default_factory=dict)  # project-relative path -> content
    command: tuple[str, ...] = LIST
    file: str = BAD  # the file the error line must name
    key: str | None = None  # the key (or tensor) it must name; None where only the file is at fault
    rc: int | None = None  # the documented exit code; None: any non-zero
    damage: Callable[[Path], None] | None = None  # edits the project copy (checkpoint damage) after files are written
    built_ok: Callable[[Path], str | None] | None = None  # when exit 0 is also a correct answer: None if the build is sound
    memory_mb: int | None = None  # RLIMIT_AS for the doit process
    env: dict[str, str] = field(default_factory=dict)  # extra environment (the fake tools read theirs)
    fakes: bool = False  # put tests/fakes (trtexec, trtllm-build) on PATH
    allow_new: bool = False  # new files under the guarded model are fine (another target's outputs), changed ones are not
    timeout: float = 30.0


def edited(old: str, new: str, base: str = BAD_YAML) -> str:
    """The model file with ``old`` replaced once; a case whose anchor is missing is a bug in the table."""
    if old not in base:
        raise ValueError(f"{old!r} not in the base model file")
    return base.replace(old, new, 1)


def yaml_case(case_id: str, category: str, broken: str, text: str | bytes, key: str | None, **extra: object) -> Case:
    """A case that writes ``models/bad.yaml`` and runs ``doit list``."""
    return Case(case_id, category, broken, {BAD: text}, key=key, **extra)  # type: ignore[arg-type]


def block_value(block: str, key: str, value: str) -> str:
    """The model file with ``block.key: value`` set (the block created when the base file has none)."""
    header = f"{block}:\n"
    if header in BAD_YAML:
        lines = BAD_YAML.splitlines(keepends=True)
        start = lines.index(header)
        end = start + 1
        while end < len(lines) and lines[end].startswith("  "):
            end += 1
        kept = [line for line in lines[start + 1 : end] if not line.startswith(f"  {key}:")]
        return "".join([*lines[: start + 1], *kept, f"  {key}: {value}\n", *lines[end:]])
    return f"{BAD_YAML}{header}  {key}: {value}\n"
