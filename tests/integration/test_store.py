"""The object-store layer against the real S3 server: the same contract as a folder, and signed requests only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.store import Store, StoreError
from tests.s3server import S3Server
from tests.support.store import first_writer_wins, roundtrip


def test_real_s3_refuses_an_overwrite_of_put_if_absent(s3_env: S3Server, tmp_path: Path) -> None:
    store = Store(s3_env.url + "/unit")
    roundtrip(store, tmp_path)
    first_writer_wins(store)


def test_unsigned_or_wrongly_signed_requests_are_refused(s3_env: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreError):
        Store(s3_env.url).put_if_absent("ac/forged", b"x")
