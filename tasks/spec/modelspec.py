"""The model file's vocabulary: names and kinds, ``Where`` a value sits, a loaded ``ModelSpec``.

And the scalar checks every field is made of.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import YamlError, shown, shown_key
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
        part = shown_key(key)
        return Where(self.file, f"{self.key}.{part}" if self.key else part)

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

# Every value has a bound a real model file never reaches, so a typo (an extra zero, a pasted blob)
# fails here naming its key instead of hanging a build or a benchmark.
MAX_TEXT = 4096  # PATH_MAX: the longest path (and any other string) a model file holds
MAX_PATH_PART = 255  # NAME_MAX: the longest file or folder name inside a path
MAX_LIST = 256  # entries of any list (concurrency levels, extra args, GPU indices, flags)
MAX_NUMBER = 1e15  # floats (bench limits in microseconds, percentages): finite and below this


def integer(low: int, high: int) -> Check:
    bound = f"between {low} and {high}"

    def check(value: Any, where: Where) -> int:  # noqa: ANN401 - raw YAML value
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or value < low or value > high:
            raise where.error(f"expected an integer {bound}, got {shown(value)}")
        return int(value)

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any, where: Where) -> str:  # noqa: ANN401
        if not isinstance(value, str) or value not in choices:
            raise where.error(f"expected one of {', '.join(choices)}, got {shown(value)}")
        return str(value)

    return check


def _finite(value: Any) -> bool:  # noqa: ANN401
    """A real number: not a bool, not NaN (every comparison with NaN is false), not infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and -MAX_NUMBER <= value <= MAX_NUMBER


def fraction(value: Any, where: Where) -> float:  # noqa: ANN401
    if not _finite(value) or not 0 < value <= 1:
        raise where.error(f"expected a number in (0, 1], got {shown(value)}")
    return float(value)


def optional(check: Check) -> Check:
    """``null`` allowed (meaning: leave the tool's own default)."""

    def maybe(value: Any, where: Where) -> Any:  # noqa: ANN401
        return None if value is None else check(value, where)

    return maybe


def boolean(value: Any, where: Where) -> bool:  # noqa: ANN401
    if not isinstance(value, bool):
        raise where.error(f"expected true or false, got {shown(value)}")
    return value


def text(value: Any, where: Where) -> str:  # noqa: ANN401
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"expected a non-empty string, got {shown(value)}")
    if len(value) > MAX_TEXT:
        raise where.error(f"expected at most {MAX_TEXT} characters, got {shown(value)}")
    return value


def path_text(value: Any, where: Where) -> str:  # noqa: ANN401
    """A file or folder path: a string the file system can look up (no part longer than NAME_MAX)."""
    path = text(value, where)
    longest = max(path.split("/"), key=len)
    if len(longest.encode("utf-8", "surrogateescape")) > MAX_PATH_PART or "\0" in path:
        raise where.error(f"expected a path whose every part is at most {MAX_PATH_PART} bytes, got {shown(value)}")
    return path


def int_list(value: Any, where: Where, high: int) -> list[int]:  # noqa: ANN401
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise where.error(f"expected a list of 1 to {MAX_LIST} integers between 1 and {high}, got {shown(value)}")
    return [integer(1, high)(item, where.child(str(i))) for i, item in enumerate(value)]


def str_list(value: Any, where: Where) -> list[str]:  # noqa: ANN401
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > MAX_LIST:
        raise where.error(f"expected a list of at most {MAX_LIST} strings, got {shown(value)}")
    for i, item in enumerate(value):
        if len(item) > MAX_TEXT:
            raise where.child(str(i)).error(f"expected at most {MAX_TEXT} characters, got {shown(item)}")
    return list(value)


def _flag_value(item: Any, where: Where) -> None:  # noqa: ANN401
    if isinstance(item, bool) or (isinstance(item, str) and len(item) <= MAX_TEXT):
        return
    if isinstance(item, int) and abs(item) < 2**63:  # the tools parse 64-bit integers at most
        return
    if isinstance(item, float) and _finite(item):
        return
    msg = f"expected a string of at most {MAX_TEXT} characters, a finite number or a boolean, got {shown(item)}"
    raise where.error(msg)


def scalar_map(value: Any, where: Where) -> dict[str, Any]:  # noqa: ANN401
    if not isinstance(value, dict) or len(value) > MAX_LIST:
        raise where.error(f"expected a mapping of at most {MAX_LIST} flag names to values, got {shown(value)}")
    for key, item in value.items():
        _flag_value(item, where.child(str(key)))
    return dict(value)


def bounded(high: float) -> Check:
    """A number > 0 and <= ``high``."""

    def check(value: Any, where: Where) -> float:  # noqa: ANN401
        if not _finite(value) or not 0 < value <= high:
            raise where.error(f"expected a number > 0 and <= {high:g}, got {shown(value)}")
        return float(value)

    return check


positive = bounded(MAX_NUMBER)


def gpu_list(value: Any, where: Where) -> list[int]:  # noqa: ANN401
    """GPU indices (as nvidia-smi numbers them), each once."""
    ok = isinstance(value, list) and 0 < len(value) <= MAX_LIST
    if not ok or len(set(map(shown, value))) != len(value):
        raise where.error(f"expected a list of 1 to {MAX_LIST} distinct GPU indices >= 0, got {shown(value)}")
    return [integer(0, MAX_LIST - 1)(item, where.child(str(i))) for i, item in enumerate(value)]


def distinct_int_list(high: int) -> Check:
    """Integers 1..``high``, each once."""

    def check(value: Any, where: Where) -> list[int]:  # noqa: ANN401
        items = int_list(value, where, high)
        if len(set(items)) != len(items):
            raise where.error(f"expected each value once, got {shown(value)}")
        return items

    return check
