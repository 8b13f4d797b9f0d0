"""The shared artifact cache: stage outputs on an object store, keyed by action key (Bazel's remote-cache model).

Layout under the store URL:

    cas/<sha256>      one object per distinct output file, uploaded once
    ac/<action key>   {"manifest": <the stage's manifest.json>, "record": <its action record>}

The entry is written last and only if absent: a partial upload is never a hit, and the
first writer wins.  A writer that loses adopts the winner's bytes, because engines are not
byte-reproducible and downstream keys hash upstream content.  The store is touched only
from inside a stage action whose local output is outdated, so an up-to-date no-op makes
no request.  A store that cannot be reached costs one warning line and the stage is
built locally; the rest of the run does not try it again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tasks.core import fsops, hashing, manifest
from tasks.core.errors import UserError
from tasks.core.store import Store, StoreError

if TYPE_CHECKING:
    from tasks.core.stage import Stage

log = logging.getLogger(__name__)

MODES = ("rw", "ro", "off")
URL_ENV = "TRITONGRAPH_CACHE"
MODE_ENV = "TRITONGRAPH_CACHE_MODE"
FETCH_ENV = "TRITONGRAPH_CACHE_FETCH"
BUILD = Path("build")
# What an entry keeps of the builder's action record besides what every hit records anew.
_OWN_FACTS = frozenset({"key", "inputs", "seconds", "finished", "task", "params", "from_cache"})

Files = dict[str, tuple[int, str]]


@dataclass(frozen=True)
class Settings:
    """Where the cache is and what this machine may do with it (``rw``: CI builders; ``ro``: laptops)."""

    url: str | None = None
    mode: str = "off"
    fetch: bool = False

    @property
    def reads(self) -> bool:
        return self.url is not None and self.mode in {"ro", "rw"}

    def variables(self) -> dict[str, str]:
        """The settings as text (part of the graph snapshot's key: stages record whether they are shared)."""
        return {"cache": self.url or "", "cache_mode": self.mode, "cache_fetch": str(self.fetch)}

    @property
    def writes(self) -> bool:
        return self.url is not None and self.mode == "rw"


def settings_from(variables: Mapping[str, str], env: Mapping[str, str]) -> Settings:
    """Doit variables (``cache=``, ``cache_mode=``, ``cache_fetch=``) win over the environment.

    A configured cache defaults to ``ro``: only machines told so (CI) write to it.
    """
    url = variables.get("cache") or env.get(URL_ENV) or None
    mode = variables.get("cache_mode") or env.get(MODE_ENV) or ("ro" if url else "off")
    if mode not in MODES:
        raise UserError("cache_mode", f"expected one of {', '.join(MODES)}, got {mode!r}")
    fetch = (variables.get("cache_fetch") or env.get(FETCH_ENV) or "0").lower() in {"1", "true", "yes"}
    return Settings(url if mode != "off" else None, mode, fetch)


class _Session:
    """The store of this run, opened on first use and given up after its first failure."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None
        self.failed = False

    def store(self) -> Store | None:
        if self.failed or not self.settings.reads or self.settings.url is None:
            return None
        if self._store is None:
            try:
                self._store = Store(self.settings.url)
            except (ValueError, StoreError) as exc:
                self.give_up(exc)
                return None
        return self._store

    def give_up(self, exc: Exception) -> None:
        self.failed = True
        url = self._store.url if self._store else "the configured store"
        log.warning("cache %s unavailable (%s); building locally, cache off for the rest of this run", url, exc)


_SESSION = _Session(Settings())


def configure(settings: Settings) -> None:
    """Set this process's cache (called once by dodo.py)."""
    global _SESSION  # noqa: PLW0603 - one cache session per doit run
    _SESSION = _Session(settings)


def current() -> Settings:
    return _SESSION.settings


T = TypeVar("T")


def _guarded(call: Callable[[Store], T]) -> T | None:
    """Run ``call`` on the store; None when there is none or it fails (which turns it off)."""
    store = _SESSION.store()
    if store is None:
        return None
    try:
        return call(store)
    except StoreError as exc:
        _SESSION.give_up(exc)
        return None


# ---- restoring a hit --------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    manifest: manifest.Manifest
    record: dict[str, Any]

    def facts(self) -> dict[str, Any]:
        """The builder's own facts (engine argv, checks, ...) that a restored output keeps."""
        return {k: v for k, v in self.record.items() if k not in _OWN_FACTS}


def parse_entry(raw: bytes | None) -> Entry | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        content = manifest.Manifest.from_json(data["manifest"])
        record = data["record"]
    except (ValueError, KeyError, TypeError):
        return None
    return Entry(content, dict(record)) if content is not None and isinstance(record, dict) else None


def source_of(key: str) -> str:
    """Where a rebuild under ``key`` would take its output from: for ``doit info``, never on a build's path."""
    if not current().reads:
        return "would build (no cache configured)"
    found = _guarded(lambda store: store.exists(f"ac/{key}"))
    if found is None:
        return "would build (cache unreachable)"
    return f"from cache {_SESSION.settings.url}" if found else "would build (not in the cache)"


def _local_blobs() -> dict[str, Path]:
    """sha256 -> a file under build/ that a stage's manifest says has it (checked again before use)."""
    found: dict[str, Path] = {}
    # build/<m>/<stage>/ and, for a stage kept per target, build/<m>/<stage>/<target>/.
    stages = [stage for model in fsops.subfolders(BUILD) for stage in fsops.subfolders(model)]
    for folder in sorted([*stages, *(target for stage in stages for target in fsops.subfolders(stage))]):
        content = manifest.load(folder)
        for rel, (_, digest) in (content.files if content else {}).items():
            found.setdefault(digest, folder / rel)
    return found


def _materialise(store: Store, entry: Entry, work: Path, task: str) -> bool:
    """Fill ``work`` with the entry's files: local hardlinks where the bytes are already here, else downloads."""
    local = _local_blobs()
    for rel, (size, digest) in entry.manifest.files.items():
        dest = work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = local.get(digest)
        if src is not None and manifest.file_problem(src, (size, digest)) is None:
            fsops.link_or_copy(src, dest)
            continue
        fetched = store.get_file(f"cas/{digest}", dest)
        if fetched is None or (fetched.size, fetched.sha256) != (size, digest):
            log.warning(
                "cache: blob cas/%s of %s (%s) is missing or does not match its sha256; refused, building locally", digest, task, rel
            )
            return False
        hashing.cache().remember(dest, digest)
    for rel in entry.manifest.dirs:
        (work / rel).mkdir(parents=True, exist_ok=True)
    return True


def _restore_entry(store: Store, entry: Entry, work: Path, task: str) -> bool:
    """Replace ``work`` by the entry's output; ``work`` is left as it was when that fails."""
    staging = fsops.tmp_sibling(work)
    fsops.remove_tree(staging)
    staging.mkdir(parents=True)
    try:
        if not _materialise(store, entry, staging, task):
            return False
        fsops.remove_tree(work)
        staging.rename(work)
        return True
    finally:
        if staging.exists():
            fsops.remove_tree(staging)


def restore(stage: Stage, key: str, work: Path) -> dict[str, Any] | None:
    """On a hit, fill ``work`` with the stage's output and return the facts to record; None on a miss."""
    if not stage.cached:
        return None

    def lookup(store: Store) -> dict[str, Any] | None:
        entry = parse_entry(store.get_bytes(f"ac/{key}"))
        if entry is None or not _restore_entry(store, entry, work, stage.task_name):
            return None
        log.info("%s: restored from cache %s (%d files)", stage.task_name, store.url, len(entry.manifest.files))
        return {**entry.facts(), "from_cache": store.url}

    return _guarded(lookup)


# ---- uploading a local build -----------------------------------------------------------


def _foreign_toolchain(stage: Stage) -> str | None:
    """Why this machine must not upload the stage: its recorded TensorRT / GPU / container is not this one's."""
    if stage.fingerprint is None:
        return None
    recorded = stage.params.get("toolchain")
    live = stage.fingerprint()
    if recorded == live:
        return None
    diff = sorted(k for k in {*recorded, *live} if recorded.get(k) != live.get(k)) if isinstance(recorded, dict) else ["toolchain"]
    return ", ".join(diff)


def _entry_bytes(stage: Stage, key: str, files: Files, dirs: tuple[str, ...], facts: Mapping[str, Any]) -> bytes:
    content = manifest.Manifest(stage.name, stage.model, stage.target, files, dirs).to_json()
    record = {
        "key": key,
        "task": stage.task_name,
        "target": stage.target,
        "toolchain": stage.params.get("toolchain", {}),
        "params": stage.params,
        **facts,
    }
    return json.dumps({"manifest": content, "record": record}, sort_keys=True, default=str).encode()


def _upload_blobs(store: Store, work: Path, files: Files) -> int:
    sent = 0
    for rel, (_, digest) in sorted(files.items()):
        if store.head(f"cas/{digest}") is None:
            store.put_file(f"cas/{digest}", work / rel)
            sent += 1
    return sent


def upload(stage: Stage, key: str, work: Path, facts: Mapping[str, Any]) -> dict[str, Any] | None:
    """Share a freshly built ``work`` dir; if another writer got there first, replace ``work`` with its output.

    Returns the facts to record when ``work`` now holds the winner's output, else None.
    """
    if not (stage.cached and _SESSION.settings.writes):
        return None
    foreign = _foreign_toolchain(stage)
    if foreign is not None:
        log.warning("%s: not uploaded to the cache: recorded toolchain differs from this machine's (%s)", stage.task_name, foreign)
        return None
    files, dirs = manifest.scan(work)

    def share(store: Store) -> dict[str, Any] | None:
        sent = _upload_blobs(store, work, files)
        if store.put_if_absent(f"ac/{key}", _entry_bytes(stage, key, files, dirs, facts)):
            log.info("%s: uploaded to cache %s (%d new blobs)", stage.task_name, store.url, sent)
            return None
        winner = parse_entry(store.get_bytes(f"ac/{key}"))
        if winner is None or winner.manifest.files == files or not _restore_entry(store, winner, work, stage.task_name):
            return None
        log.info("%s: another builder shared this key first; its output replaces ours", stage.task_name)
        return {**winner.facts(), "from_cache": store.url}

    return _guarded(share)
