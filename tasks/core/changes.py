"""Params compared leaf by leaf: what ``doit info`` and a failed stage say changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:  # noqa: ANN401
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from _flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def flatten(value: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON values
    """Dotted key -> leaf value: ``{"engine.precision": "fp16"}``."""
    return dict(_flatten(value))


def describe_changes(old: Any, new: Any) -> list[str]:  # noqa: ANN401 - JSON values
    """One readable line per changed leaf: ``engine.max_batch_size: 8 -> 32``."""
    before, after = dict(_flatten(old)), dict(_flatten(new))
    unset = "<unset>"
    return [
        f"{key}: {before.get(key, unset)} -> {after.get(key, unset)}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key, unset) != after.get(key, unset)
    ]


_SHOWN_CHANGES = 5
_SHOWN_CHARS = 200


def since_last_good(source: Path | None, record: Any, params: Any, target: str) -> str:  # noqa: ANN401 - JSON values
    """``; <model file> changed since the last good build: <key>: <old> -> <new>``, for a failed stage's one line.

    ``record`` is the stage's action record (the params of its last good build on this target);
    nothing to compare with when the stage never built there, and nothing said when its model file is unknown.
    """
    if source is None:
        return ""
    if not isinstance(record, dict) or "params" not in record:
        # Only a target's own stages (the tools) say so: an input error needs no history.
        return f"; {source}: first build on target {target}" if target != "any" else ""
    changed = describe_changes(record["params"], params)
    if not changed:
        return f"; {source} is unchanged since the last good build"
    more = f" (+{len(changed) - _SHOWN_CHANGES} more)" if len(changed) > _SHOWN_CHANGES else ""
    text = "; ".join(changed[:_SHOWN_CHANGES])
    text = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
    return f"; {source} changed since the last good build: {text}{more}"
