"""The object-store layer against a local folder, and its errors and URLs without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.store import Store, StoreError, display_url
from tests.support.store import first_writer_wins, roundtrip


def test_local_folder_store(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    roundtrip(store, tmp_path)
    first_writer_wins(store)
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
