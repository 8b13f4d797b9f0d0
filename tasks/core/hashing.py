"""Content digests of files with a persistent stat cache, and the doit checker built on it.

doit's default md5 checker re-reads a file whose mtime changed on every later run
for as long as the task stays up to date (it only saves state after a task runs).
Here a digest is remembered by ``(device, inode) -> (size, mtime_ns, sha256)`` in a
SQLite table shared by all tasks and all runs, so a touched file is hashed once.
Keying by inode also means a renamed directory or a hardlink costs no re-hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from pathlib import Path

from doit.dependency import FileChangedChecker

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    """sha256 of one file's bytes; file_digest reads in fixed-size blocks, so memory stays flat for multi-GB weights."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class StatCache:
    """sha256 digests remembered by inode, size and mtime across runs."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._conn: sqlite3.Connection | None = None
        self._memo: dict[tuple[int, int, int, int], str] = {}
        self._preloaded = False

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # A cache: losing its last rows in a power cut costs a re-hash, an fsync per row costs a touch of 800 files a second.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS digests (dev INTEGER, ino INTEGER, size INTEGER,"
                " mtime_ns INTEGER, sha256 TEXT, PRIMARY KEY (dev, ino))"
            )
            self._conn = conn
        return self._conn

    def digest(self, path: Path | str, st: os.stat_result | None = None) -> str:
        """Return the sha256 of ``path``, hashing it only if its stat changed."""
        st = st or os.stat(path)  # noqa: PTH116 - called for every file a no-op checks, often with a plain string
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in self._memo:
            return self._memo[key]
        if not self._preloaded:
            # One query for the whole table: a no-op checks thousands of files, one SELECT each cost more than doit itself.
            self._preloaded = True
            self._memo.update(((d, i, s, m), str(v)) for d, i, s, m, v in self._db().execute("SELECT * FROM digests"))
            if key in self._memo:
                return self._memo[key]
        value = sha256_file(Path(path))
        log.debug("hashed %s (%d bytes)", path, st.st_size)
        self._store(key, value)
        self._memo[key] = value
        return value

    def remember(self, path: Path, value: str) -> None:
        """Record a digest computed elsewhere (e.g. while the file was written)."""
        st = path.stat()
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self._memo[key] = value
        self._store(key, value)

    def _store(self, key: tuple[int, int, int, int], value: str) -> None:
        self._db().execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)", (*key, value))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_CACHE: StatCache | None = None


def configure(db_path: Path) -> StatCache:
    """Point the process-wide cache at ``db_path`` (called once by dodo.py)."""
    global _CACHE  # noqa: PLW0603 - one cache per process, shared by doit's checker
    if _CACHE is not None:
        _CACHE.close()
    _CACHE = StatCache(db_path)
    return _CACHE


def cache() -> StatCache:
    if _CACHE is None:
        return configure(Path("build/.cache/digests.sqlite"))
    return _CACHE


def digest(path: Path) -> str:
    """sha256 of a file through the process-wide stat cache."""
    return cache().digest(path)


class Sha256StatChecker(FileChangedChecker):  # type: ignore[misc]
    """doit file_dep checker: state is the content sha256, looked up through the stat cache.

    A touched file with unchanged bytes compares equal, and the new stat is cached,
    so the next no-op does not read it again.
    """

    def check_modified(self, file_path: str, file_stat: os.stat_result, state: object) -> bool:
        return state != cache().digest(Path(file_path), file_stat)

    def get_state(self, dep: str, current_state: object) -> str | None:
        value = cache().digest(Path(dep))
        return None if value == current_state else value
