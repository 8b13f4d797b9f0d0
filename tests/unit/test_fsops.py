from __future__ import annotations

import stat
from pathlib import Path

from tasks.core import fsops


def test_swap_in_exchanges_directories_atomically(tmp_path: Path) -> None:
    dest = tmp_path / "repo"
    dest.mkdir()
    (dest / "old").write_text("1")
    new = tmp_path / ".repo.tmp-1"
    new.mkdir()
    (new / "new").write_text("2")
    inode = new.stat().st_ino
    old = fsops.swap_in(new, dest)
    assert dest.stat().st_ino == inode
    assert (dest / "new").read_text() == "2"
    assert old is not None
    assert (old / "old").read_text() == "1"


def test_swap_in_creates_missing_destination(tmp_path: Path) -> None:
    new = tmp_path / "w"
    new.mkdir()
    assert fsops.swap_in(new, tmp_path / "a" / "b") is None
    assert (tmp_path / "a" / "b").is_dir()


def test_link_or_copy_hardlinks_on_one_filesystem(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(b"x" * 1024)
    assert fsops.link_or_copy(src, tmp_path / "sub" / "big")
    assert (tmp_path / "sub" / "big").stat().st_ino == src.stat().st_ino


def test_clone_or_copy_gives_a_new_inode_with_the_same_bytes(tmp_path: Path) -> None:
    src = tmp_path / "weights"
    src.write_bytes(bytes(range(256)) * 64)
    dst = tmp_path / "sub" / "weights"
    fsops.clone_or_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_ino != src.stat().st_ino
    with dst.open("r+b") as handle:
        handle.write(b"edited")
    assert src.read_bytes() == bytes(range(256)) * 64


def test_link_read_only_shares_the_inode_without_write_bits(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx")
    src.chmod(0o664)
    assert fsops.link_read_only(src, tmp_path / "repo" / "model.onnx")
    linked = tmp_path / "repo" / "model.onnx"
    assert linked.stat().st_ino == src.stat().st_ino
    assert stat.S_IMODE(src.stat().st_mode) == 0o444


def test_write_json_atomic_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    fsops.write_json_atomic(path, {"b": 1, "a": [1, 2]})
    first = path.read_bytes()
    fsops.write_json_atomic(path, {"a": [1, 2], "b": 1})
    assert path.read_bytes() == first
    assert fsops.read_json(tmp_path / "missing.json") is None
