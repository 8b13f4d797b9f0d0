"""A stage that reads some files of an upstream output depends on their part's manifest, rewritten only when it changes."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core import manifest
from tasks.stages import fetch

CHECKPOINT = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "sub/tokenizer.json")


def fetched(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    found, dirs = manifest.scan(root)
    (root / manifest.MANIFEST).write_text(json.dumps(manifest.Manifest("fetch", "m", "any", found, dirs).to_json()), encoding="utf-8")
    return root


def part_files(root: Path, part: str) -> list[str]:
    return sorted(json.loads((root / manifest.part_name(part)).read_text(encoding="utf-8"))["files"])


def test_each_reader_gets_the_files_it_reads(tmp_path: Path) -> None:
    root = fetched(tmp_path, {name: name.encode() for name in CHECKPOINT})
    manifest.write_parts(root, fetch.PARTS)
    assert part_files(root, fetch.CONFIG) == ["config.json"]
    assert part_files(root, fetch.FRONT) == ["sub/tokenizer.json", "tokenizer.json", "tokenizer_config.json"]
    assert part_files(root, fetch.TOKENIZER) == ["sub/tokenizer.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert part_files(root, fetch.MODEL) == ["config.json", "model.safetensors"]


def test_part_manifests_are_meta_files_not_content(tmp_path: Path) -> None:
    root = fetched(tmp_path, {name: name.encode() for name in CHECKPOINT})
    manifest.write_parts(root, fetch.PARTS)
    assert sorted(manifest.scan(root)[0]) == sorted(CHECKPOINT)


def test_a_part_is_rewritten_only_when_its_files_change(tmp_path: Path) -> None:
    root = fetched(tmp_path, {name: name.encode() for name in CHECKPOINT})
    manifest.write_parts(root, fetch.PARTS)
    inodes = {part: (root / manifest.part_name(part)).stat().st_ino for part in fetch.PARTS}
    fetched(root, {"tokenizer_config.json": b"{}"})
    manifest.write_parts(root, fetch.PARTS)
    changed = {part for part in fetch.PARTS if (root / manifest.part_name(part)).stat().st_ino != inodes[part]}
    assert changed == {fetch.FRONT, fetch.TOKENIZER}
