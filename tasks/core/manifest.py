"""Output manifests: relative path -> size and sha256, content only.

Downstream stages depend on ``manifest.json``, so it must change exactly when the
bytes of the output change.  Everything that describes *how* the output was made
(action key, toolchain, timings, checks) goes to ``action.json`` beside it.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core import hashing
from tasks.core.fsops import read_json, write_json_if_changed

MANIFEST = "manifest.json"
RECORD = "action.json"
# The meta files at an output's root: not part of its content.
META = frozenset({MANIFEST, RECORD})


@dataclass(frozen=True)
class Manifest:
    """Content of one stage output directory."""

    stage: str
    model: str
    target: str
    files: dict[str, tuple[int, str]]
    dirs: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "model": self.model,
            "target": self.target,
            "files": {rel: {"size": s, "sha256": h} for rel, (s, h) in sorted(self.files.items())},
            "empty_dirs": list(self.dirs),
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest | None:  # noqa: ANN401 - parsed JSON
        try:
            files = {rel: (int(v["size"]), str(v["sha256"])) for rel, v in data["files"].items()}
            return cls(data["stage"], data["model"], data["target"], files, tuple(data["empty_dirs"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def scan(root: Path) -> tuple[dict[str, tuple[int, str]], tuple[str, ...]]:
    """Every file under ``root`` (minus the meta files) with size and digest, and the empty dirs."""
    files: dict[str, tuple[int, str]] = {}
    empty: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        names = [n for n in filenames if not (rel_dir == Path() and is_meta(n))]
        if not names and not dirnames and here != root:
            empty.append(rel_dir.as_posix())
        for name in names:
            path = here / name
            files[(rel_dir / name).as_posix()] = (path.stat().st_size, hashing.digest(path))
    return dict(sorted(files.items())), tuple(sorted(empty))


def is_meta(name: str) -> bool:
    """A meta file at an output's root: the manifest, the action record or a part's manifest."""
    return name in META or (name.startswith("manifest.") and name.endswith(".json"))


def part_name(part: str) -> str:
    """The file beside ``manifest.json`` describing one part of the output."""
    return f"manifest.{part}.json"


def in_part(rel: str, patterns: Sequence[str]) -> bool:
    """The last pattern matching the path or its file name decides; ``!pattern`` leaves the file out."""
    chosen = False
    for pattern in patterns:
        exclude = pattern.startswith("!")
        bare = pattern.removeprefix("!")
        if fnmatch.fnmatchcase(rel, bare) or fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], bare):
            chosen = not exclude
    return chosen


def part(content: Manifest, name: str, patterns: Sequence[str]) -> dict[str, Any]:
    """The manifest of the files of ``content`` in one part: content only, like the whole one."""
    files = {rel: entry for rel, entry in content.files.items() if in_part(rel, patterns)}
    return {**Manifest(content.stage, content.model, content.target, files, ()).to_json(), "part": name}


def write_parts(meta_dir: Path, parts: Mapping[str, Sequence[str]]) -> None:
    """Each part's manifest, rewritten only when its content changed (its readers' digests stay cached)."""
    content = load(meta_dir)
    if content is None:
        return
    for name, patterns in parts.items():
        write_json_if_changed(meta_dir / part_name(name), part(content, name, patterns))


def load(meta_dir: Path) -> Manifest | None:
    return Manifest.from_json(read_json(meta_dir / MANIFEST))


def file_problem(path: Path | str, entry: tuple[int, str]) -> str | None:
    """Why ``path`` no longer has the size and sha256 of ``entry``, or None."""
    try:
        st = os.stat(path)  # noqa: PTH116 - a no-op checks every output file: plain strings, no Path each
    except OSError:
        return f"{path} is missing"
    if st.st_size != entry[0] or hashing.cache().digest(path, st) != entry[1]:
        return f"{path} was modified"
    return None


def verify(manifest: Manifest | None, out_dir: Path) -> str | None:
    """Why ``out_dir`` no longer matches its manifest, or None when it does."""
    if manifest is None:
        return "no manifest"
    base = f"{out_dir}/"
    for rel, entry in manifest.files.items():
        problem = file_problem(base + rel, entry)
        if problem is not None:
            return problem
    for rel in manifest.dirs:
        if not (out_dir / rel).is_dir():
            return f"{out_dir / rel}/ is missing"
    return None
