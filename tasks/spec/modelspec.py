"""The model file's vocabulary: names and kinds, ``Where`` a value sits, a loaded ``ModelSpec``.

And the scalar checks every field is made of.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import YamlError
from tasks.spec import sweep

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
SHA_RE = re.compile(r"[0-9a-f]{40}")
TOP_KEYS = ("name", "kind", "family", "source", "members", "index", "export", "convert", "engine", "triton", "bench", "sweep", "compare")
KINDS = ("encoder", "llm", "ensemble")
IMPLEMENTED_KINDS = {"encoder": ("bert", "clip-vision", "clip-text"), "llm": ("t5", "gpt2", "llama", "gemma"), "ensemble": ()}
# Which encoder families take images; the rest take text.
IMAGE_FAMILIES = ("clip-vision",)
MEMBER_ROLES = {"image": "an image encoder (family clip-vision)", "text": "a text encoder (family bert or clip-text)"}
REQUIRED = object()

Check = Callable[[Any, "Where"], Any]


@dataclass(frozen=True)
class Where:
    """The file and dotted key a value came from, for one-line errors."""

    file: str
    key: str

    def child(self, key: str) -> Where:
        return Where(self.file, f"{self.key}.{key}" if self.key else key)

    def error(self, message: str) -> YamlError:
        return YamlError(self.file, self.key, message)


@dataclass(frozen=True)
class ModelSpec:
    """A validated model file; blocks hold every key with defaults filled in."""

    name: str
    kind: str
    family: str
    file: Path
    source: Mapping[str, str]
    blocks: Mapping[str, Mapping[str, Any]]
    written: frozenset[str] = frozenset()  # top-level keys present in the file
    point: sweep.Point | None = None  # this variant's swept values (None: the file has no sweep:)
    variants: tuple[ModelSpec, ...] = ()  # a swept file's variants, in sweep order
    corpus_images: tuple[Path, ...] = ()  # the image files an image index's corpus lists (read once, at load)

    def block(self, name: str) -> Mapping[str, Any]:
        return self.blocks.get(name, {})

    @property
    def variant(self) -> str:
        """``<name>``, or ``<name>@<swept values>`` for one point of a sweep."""
        return self.point.name(self.name) if self.point else self.name

    @property
    def settings(self) -> dict[str, Any]:
        """The swept values of this variant by dotted path (empty without a sweep)."""
        return dict(self.point.values) if self.point else {}

    def owner(self, blocks: tuple[str, ...]) -> str:
        """The name a stage reading only ``blocks`` is built under: shared by variants agreeing on them."""
        return self.point.name(self.name, blocks) if self.point else self.name


# ---- scalar checks -------------------------------------------------------------------------


def integer(low: int, high: int | None = None) -> Check:
    bound = f">= {low}" if high is None else f"between {low} and {high}"

    def check(value: Any, where: Where) -> int:  # noqa: ANN401 - raw YAML value
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or value < low or (high is not None and value > high):
            raise where.error(f"expected an integer {bound}, got {value!r}")
        return int(value)

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any, where: Where) -> str:  # noqa: ANN401
        if value not in choices:
            raise where.error(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return check


def fraction(value: Any, where: Where) -> float:  # noqa: ANN401
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1
    if not ok:
        raise where.error(f"expected a number in (0, 1], got {value!r}")
    return float(value)


def optional(check: Check) -> Check:
    """``null`` allowed (meaning: leave the tool's own default)."""

    def maybe(value: Any, where: Where) -> Any:  # noqa: ANN401
        return None if value is None else check(value, where)

    return maybe


def boolean(value: Any, where: Where) -> bool:  # noqa: ANN401
    if not isinstance(value, bool):
        raise where.error(f"expected true or false, got {value!r}")
    return value


def text(value: Any, where: Where) -> str:  # noqa: ANN401
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"expected a non-empty string, got {value!r}")
    return value


def int_list(value: Any, where: Where) -> list[int]:  # noqa: ANN401
    if not isinstance(value, list) or not value:
        raise where.error(f"expected a non-empty list of integers >= 1, got {value!r}")
    return [integer(1)(item, where.child(str(i))) for i, item in enumerate(value)]


def str_list(value: Any, where: Where) -> list[str]:  # noqa: ANN401
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(f"expected a list of strings, got {value!r}")
    return list(value)


def scalar_map(value: Any, where: Where) -> dict[str, Any]:  # noqa: ANN401
    if not isinstance(value, dict):
        raise where.error(f"expected a mapping of flag name to value, got {value!r}")
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool):
            raise where.child(str(key)).error(f"expected a string, number or boolean, got {item!r}")
    return dict(value)


def positive(value: Any, where: Where) -> float:  # noqa: ANN401
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise where.error(f"expected a number > 0, got {value!r}")
    return float(value)


def gpu_list(value: Any, where: Where) -> list[int]:  # noqa: ANN401
    """GPU indices (as nvidia-smi numbers them), each once."""
    if not isinstance(value, list) or not value or len(set(map(str, value))) != len(value):
        raise where.error(f"expected a non-empty list of distinct GPU indices >= 0, got {value!r}")
    return [integer(0)(item, where.child(str(i))) for i, item in enumerate(value)]


def distinct_int_list(value: Any, where: Where) -> list[int]:  # noqa: ANN401
    items = int_list(value, where)
    if len(set(items)) != len(items):
        raise where.error(f"expected each value once, got {value!r}")
    return items
