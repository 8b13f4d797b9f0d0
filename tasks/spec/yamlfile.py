"""Reading one model file: UTF-8, YAML without duplicate keys, and a bounded size once aliases are expanded.

PyYAML shares the object an alias points to, so a 500-byte "billion laughs" file loads
cheaply, but anything that walks the value (a message formatting it, a deep copy for a
sweep, JSON for a hash) expands it: depth 8 took 1.4 GB and a 350 MB error line, depth 9
more than 6 GB.  Anchors and aliases stay usable for sharing a few values; a document whose
expanded size exceeds ``MAX_NODES`` is refused before anything looks at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tasks.core.errors import YamlError, shown

# Values (scalars, lists, mappings) of one file after alias expansion; the largest shipped file has ~60.
MAX_NODES = 10_000
MAX_BYTES = 1_000_000  # a model file is a few hundred bytes; corpora and prompts live in files of their own


class _TooLargeError(yaml.YAMLError):
    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


def expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Values under ``node`` counted as if every alias were written out (shared nodes counted per use)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _TooLargeError("an alias refers to the value that contains it (a recursive value)", node.start_mark.line + 1)
    active.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1
    for child in children:
        size += expanded_size(child, memo, active)
        if size > MAX_NODES:
            break  # the count only has to prove the budget is exceeded
    active.discard(key)
    memo[key] = size
    return size


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently) and alias bombs."""

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            size = expanded_size(node, {}, set())
            if size > MAX_NODES:
                msg = (
                    f"anchors and aliases (&name / *name) expand this file to more than {MAX_NODES:,} values; "
                    f"at most {MAX_NODES:,} (aliases are for sharing a few values)"
                )
                raise _TooLargeError(msg, 0)
        return node


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:  # noqa: FBT001, FBT002 - PyYAML API
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {shown(key)} (line {line})", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_text(path: Path, shown_path: str) -> str:
    """The file as UTF-8 text; unreadable, oversized or undecodable files are one line naming the file."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise YamlError(shown_path, "", f"{size:,} bytes; a model file is at most {MAX_BYTES:,} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlError(shown_path, "", f"cannot read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start : exc.start + 1].hex()
        msg = f"line {line}: not UTF-8 text (byte 0x{byte} at offset {exc.start}); save the file as UTF-8"
        raise YamlError(shown_path, "", msg) from None


def read_yaml(path: Path, shown_path: str) -> dict[str, Any]:
    """The file's top-level mapping."""
    text = read_text(path, shown_path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - safe loader subclass
    except _TooLargeError as exc:
        line = f"line {exc.line}: " if exc.line else ""
        raise YamlError(shown_path, "", f"{line}{exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(shown_path, "", f"{line}not valid YAML: {problem}") from None
    except ValueError as exc:
        # PyYAML's int() of a scalar longer than Python's 4,300-digit limit
        raise YamlError(shown_path, "", f"not valid YAML: {str(exc)[:160]}") from None
    except RecursionError:
        raise YamlError(shown_path, "", "not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise YamlError(shown_path, "", f"expected a mapping of keys (name, kind, source, ...), got {type(data).__name__}")
    return data
