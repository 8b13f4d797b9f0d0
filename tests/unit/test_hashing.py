from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tasks.core import hashing


@pytest.fixture
def cache(tmp_path: Path) -> hashing.StatCache:
    return hashing.StatCache(tmp_path / "digests.sqlite")


def test_digest_is_sha256_and_survives_a_new_process(tmp_path: Path, cache: hashing.StatCache, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(3 << 20))
    assert cache.digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    cache.close()
    calls: list[Path] = []

    def counting(path: Path) -> str:
        calls.append(path)
        return "x"

    monkeypatch.setattr(hashing, "sha256_file", counting)
    again = hashing.StatCache(tmp_path / "digests.sqlite")
    assert again.digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert calls == []


def test_touch_rehashes_once_and_content_change_is_seen(tmp_path: Path, cache: hashing.StatCache, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    real = hashing.sha256_file
    calls: list[Path] = []

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    first = cache.digest(path)
    os.utime(path, ns=(1, 1))
    assert cache.digest(path) == first
    assert cache.digest(path) == first
    assert len(calls) == 2
    path.write_bytes(b"abd")
    assert cache.digest(path) != first


def test_hardlinks_and_renames_share_one_digest(tmp_path: Path, cache: hashing.StatCache, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a"
    path.write_bytes(b"payload")
    value = cache.digest(path)
    os.link(path, tmp_path / "b")
    path.rename(tmp_path / "c")
    monkeypatch.setattr(hashing, "sha256_file", lambda p: pytest.fail(f"re-hashed {p}"))
    # A new link changes ctime only; the key (device, inode, size, mtime) is unchanged.
    assert cache.digest(tmp_path / "b") == value
    assert cache.digest(tmp_path / "c") == value


def test_checker_compares_content_not_mtime(tmp_path: Path) -> None:
    hashing.configure(tmp_path / "d.sqlite")
    path = tmp_path / "dep"
    path.write_text("v1")
    checker = hashing.Sha256StatChecker()
    state = checker.get_state(str(path), None)
    assert checker.get_state(str(path), state) is None
    os.utime(path, ns=(5, 5))
    assert not checker.check_modified(str(path), path.stat(), state)
    path.write_text("v2")
    assert checker.check_modified(str(path), path.stat(), state)
