"""Which repository files are hardlinked to build/ outputs and which are copies a user may edit."""

from __future__ import annotations

import stat
from pathlib import Path

from tasks.core import fsops


def test_artifacts_are_linked_read_only_and_editable_files_copied(tmp_path: Path) -> None:
    built = tmp_path / "build"
    (built / "1").mkdir(parents=True)
    files = {
        "1/model.onnx": b"onnx",
        "1/model.plan": b"plan",
        "config.pbtxt": b'name: "m"',
        "1/model.py": b"x = 1",
        "1/tokenizer.json": b"{}",
    }
    for rel, data in files.items():
        (built / rel).write_bytes(data)
    with (built / "1/vectors").open("wb") as handle:  # no artifact suffix, but too large to copy (sparse)
        handle.truncate(fsops.SHARED_MIN_BYTES)
    assert fsops.link_tree(built, tmp_path / "repo") == 0
    linked = {
        p.relative_to(tmp_path / "repo").as_posix()
        for p in (tmp_path / "repo").rglob("*")
        if p.is_file() and p.stat().st_ino == (built / p.relative_to(tmp_path / "repo")).stat().st_ino
    }
    assert linked == {"1/model.onnx", "1/model.plan", "1/vectors"}
    for rel in linked:
        assert stat.S_IMODE((built / rel).stat().st_mode) & 0o222 == 0
    for rel, data in files.items():
        assert (tmp_path / "repo" / rel).read_bytes() == data
    assert stat.S_IMODE((tmp_path / "repo" / "config.pbtxt").stat().st_mode) & 0o200  # a copy stays editable
