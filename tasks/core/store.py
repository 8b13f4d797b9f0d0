"""One typed interface to an object store: S3, GCS, Azure, a ``file://`` URL or a plain folder.

A thin layer over obstore.  Credentials, endpoints and regions come only from each
service's standard environment / credential chain (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME``,
instance metadata, ...), never from the URL the user types, so no secret reaches argv,
logs or records.  Every failure of the store itself surfaces as one ``StoreError``;
a missing object is a value (``None`` / ``False``), not an exception.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError
from obstore.store import LocalStore, from_url

if TYPE_CHECKING:  # type-only names of obstore's stubs, absent at run time
    from obstore.store import ClientConfig, ObjectStore, RetryConfig

_CLOUD_SCHEMES = frozenset({"s3", "s3a", "gs", "az", "azure", "abfs", "abfss"})
_READ_CHUNK = 8 << 20
_PART_SIZE = 16 << 20
# An unreachable store must cost seconds, not minutes: short connect and stall limits,
# one quick retry.  The overall limit is long because a 13 GB engine is one request.
_CLIENT: ClientConfig = {"connect_timeout": "3s", "read_timeout": "15s", "timeout": "2h"}
_RETRY: RetryConfig = {
    "max_retries": 1,
    "retry_timeout": timedelta(seconds=5),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1), "base": 2},
}


class StoreError(Exception):
    """The store could not be reached or refused a request (network, auth, server error)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@dataclass(frozen=True)
class Fetched:
    """A downloaded object: its size and the sha256 of the bytes written."""

    size: int
    sha256: str


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to print and record."""
    parts = urlsplit(url)
    if parts.scheme not in _CLOUD_SCHEMES and parts.scheme != "file":
        return str(Path(url).expanduser().resolve())
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _client_options(scheme: str) -> ClientConfig:
    # Explicit client options replace the ones obstore reads from the environment, so the
    # one a local endpoint needs (plain http, e.g. MinIO / SeaweedFS) is carried over.
    prefix = {"s3": "AWS", "s3a": "AWS", "gs": "GOOGLE"}.get(scheme, "AZURE")
    allow_http = os.environ.get(f"{prefix}_ALLOW_HTTP", "").lower() in {"1", "true", "yes"}
    return {**_CLIENT, "allow_http": allow_http}


def _open(url: str) -> ObjectStore:
    parts = urlsplit(url)
    if parts.scheme in _CLOUD_SCHEMES:
        # Only scheme, bucket and prefix are taken from the URL; all else from the environment.
        return from_url(display_url(url), client_options=_client_options(parts.scheme), retry_config=_RETRY)
    path = Path(parts.path) if parts.scheme == "file" else Path(url).expanduser()
    if parts.scheme not in {"", "file"}:
        raise ValueError(f"unsupported store URL scheme {parts.scheme!r} (use s3://, gs://, az://, file:// or a folder)")
    return LocalStore(path.resolve(), mkdir=True)


class Store:
    """A bucket prefix or a folder, addressed by ``/``-separated keys."""

    def __init__(self, url: str) -> None:
        self.url = display_url(url)
        self._store = _open(url)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def head(self, key: str) -> ObjectInfo | None:
        try:
            meta = obstore.head(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return None
        except (BaseError, OSError) as exc:
            raise _error("head", key, exc) from exc
        return ObjectInfo(key, int(meta["size"]))

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with the folder ``prefix``."""
        try:
            batches = list(obstore.list(self._store, prefix.rstrip("/") or None))
        except (BaseError, OSError) as exc:
            raise _error("list", prefix, exc) from exc
        return sorted((ObjectInfo(m["path"], int(m["size"])) for batch in batches for m in batch), key=lambda o: o.key)

    def get_bytes(self, key: str) -> bytes | None:
        """A small object (an action entry) in memory, or None when absent."""
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except (NotFoundError, FileNotFoundError):
            return None
        except (BaseError, OSError) as exc:
            raise _error("get", key, exc) from exc

    def get_file(self, key: str, dest: Path) -> Fetched | None:
        """Stream ``key`` into ``dest`` chunk by chunk, hashing as it is written; None when absent.

        ``dest`` is written in place: callers give a private path and check the digest.
        """
        digest = hashlib.sha256()
        size = 0
        try:
            result = obstore.get(self._store, key)
            with dest.open("wb") as handle:
                for chunk in result.stream(min_chunk_size=_READ_CHUNK):
                    view = memoryview(chunk)
                    digest.update(view)
                    handle.write(view)
                    size += len(view)
        except (NotFoundError, FileNotFoundError):
            dest.unlink(missing_ok=True)
            return None
        except (BaseError, OSError) as exc:
            dest.unlink(missing_ok=True)
            raise _error("get", key, exc) from exc
        return Fetched(size, digest.hexdigest())

    def put_file(self, key: str, src: Path) -> None:
        """Upload a file; big files go as a multipart upload, which becomes visible only when complete."""
        try:
            obstore.put(self._store, key, src, chunk_size=_PART_SIZE, max_concurrency=8)
        except (BaseError, OSError) as exc:
            raise _error("put", key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object, replacing any object at ``key`` (a pointer such as ``latest``)."""
        try:
            obstore.put(self._store, key, data, use_multipart=False)
        except (BaseError, OSError) as exc:
            raise _error("put", key, exc) from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if no object is there; True if this call wrote it, False if another writer won."""
        try:
            obstore.put(self._store, key, data, mode="create", use_multipart=False)
        except AlreadyExistsError:
            return False
        except FileExistsError:
            return False
        except (BaseError, OSError) as exc:
            raise _error("put", key, exc) from exc
        return True

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return
        except (BaseError, OSError) as exc:
            raise _error("delete", key, exc) from exc


def _error(op: str, key: str, exc: Exception) -> StoreError:
    # The first line of obstore's message names the failure; later lines may quote
    # request details, which stay out of logs.
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StoreError(f"{op} {key}: {first}")
