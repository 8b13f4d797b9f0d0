"""Contract checks every object store passes: a local folder and a real S3 server alike."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tasks.core.store import Store


def roundtrip(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    payload = bytes(range(256)) * 40_000  # ~10 MB: several read chunks
    src.write_bytes(payload)
    store.put_file("cas/blob", src)
    info = store.head("cas/blob")
    assert info is not None
    assert info.size == len(payload)
    fetched = store.get_file("cas/blob", tmp_path / "dst.bin")
    assert fetched is not None
    assert fetched.sha256 == hashlib.sha256(payload).hexdigest()
    assert (tmp_path / "dst.bin").read_bytes() == payload
    assert store.get_file("cas/none", tmp_path / "none.bin") is None
    assert not (tmp_path / "none.bin").exists()
    assert store.head("cas/none") is None
    assert [o.key for o in store.list("cas")] == ["cas/blob"]


def first_writer_wins(store: Store) -> None:
    assert store.put_if_absent("ac/key", b"first")
    assert not store.put_if_absent("ac/key", b"second")
    assert store.get_bytes("ac/key") == b"first"
    assert store.get_bytes("ac/other") is None
