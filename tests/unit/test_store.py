"""The object-store layer against a local folder and the real S3 server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tasks.core.store import Store, StoreError, display_url


def _roundtrip(store: Store, tmp_path: Path) -> None:
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


def _first_writer_wins(store: Store) -> None:
    assert store.put_if_absent("ac/key", b"first")
    assert not store.put_if_absent("ac/key", b"second")
    assert store.get_bytes("ac/key") == b"first"
    assert store.get_bytes("ac/other") is None


def test_local_folder_store(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    _roundtrip(store, tmp_path)
    _first_writer_wins(store)
    assert Store((tmp_path / "store").as_uri()).get_bytes("ac/key") == b"first"


def test_closed_port_is_a_store_error_within_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.s3server import free_ports

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(StoreError):
        Store("s3://cache/x").head("ac/k")


def test_display_url_drops_credentials_and_query() -> None:
    assert display_url("s3://user:pw@bucket/prefix?secret=1") == "s3://bucket/prefix"
