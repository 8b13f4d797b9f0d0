"""publish: ``repos/<m>`` uploaded to the store as an immutable prefix named by its content digest.

Layout under the store URL (beside the cache's ``cas/`` and ``ac/``)::

    repos/<m>/<digest>/...              the repository's files, servable as they are
    repos/<m>/<digest>/repository.json  its index (each file's size and sha256, the empty folders), written last
    repos/<m>/latest                    the digest last published (what ``pull:<m>`` takes by default)

Object stores have no folders: an empty folder (an ensemble's version folder ``1/``) is kept by a
zero-byte ``<dir>/.keep`` object; Triton's S3 loader counts any object under a prefix as a folder.
(The other convention, an empty object named ``<dir>/``, cannot be written through obstore,
whose paths drop a trailing ``/``.)  Triton ignores files at a repository's root, so the index
sits there without disturbing the server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from doit.exceptions import TaskFailed

from tasks.core import cache, manifest
from tasks.core.errors import UserError
from tasks.core.store import Store, StoreError
from tasks.stages import repo
from tasks.stages.graph import REPOS, Graph

log = logging.getLogger(__name__)

INDEX = "repository.json"
LATEST = "latest"
MARKER = ".keep"

Files = dict[str, tuple[int, str]]


@dataclass(frozen=True)
class Published:
    model: str
    digest: str
    root: str  # the absolute path it was built at: pull rewrites config paths from it
    files: Files
    dirs: tuple[str, ...]

    @property
    def prefix(self) -> str:
        return prefix_of(self.model, self.digest)

    def to_json(self) -> dict[str, Any]:
        content = manifest.Manifest("repo", self.model, "any", self.files, self.dirs).to_json()
        return {
            "model": self.model,
            "digest": self.digest,
            "root": self.root,
            "files": content["files"],
            "empty_dirs": content["empty_dirs"],
        }

    @classmethod
    def from_json(cls, data: Any) -> Published | None:  # noqa: ANN401 - parsed JSON
        try:
            files = {rel: (int(v["size"]), str(v["sha256"])) for rel, v in data["files"].items()}
            found = cls(str(data["model"]), str(data["digest"]), str(data["root"]), files, tuple(data["empty_dirs"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return found if content_digest(found.files, found.dirs) == found.digest else None


def prefix_of(model: str, digest: str) -> str:
    return f"repos/{model}/{digest}"


def content_digest(files: Files, dirs: tuple[str, ...]) -> str:
    """sha256 over the sorted (relative path, sha256) pairs and the empty folders: names the prefix."""
    listing = {"files": sorted([rel, sha] for rel, (_, sha) in files.items()), "empty_dirs": sorted(dirs)}
    return hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()


def store_from_settings(task: str) -> Store:
    """The configured cache store (cache= / TRITONGRAPH_CACHE); publishing and pulling are explicit, any mode but off."""
    url = cache.current().url
    if url is None:
        raise UserError(task, f"no store configured: pass cache=<url> or set {cache.URL_ENV} (cache_mode must not be off)")
    try:
        return Store(url)
    except ValueError as exc:
        raise UserError("cache", str(exc)) from None


def scan_repository(model: str, source: Path) -> Published:
    if not (source / repo.TOOLCHAIN_FILE).is_file():
        raise UserError(f"publish:{model}", f"{source} is not a finished repository; run doit build:{model}")
    files, dirs = manifest.scan(source)
    return Published(model, content_digest(files, dirs), str(source.resolve()), files, dirs)


def upload(store: Store, source: Path, published: Published) -> bool:
    """Upload files, then folder markers, then the index; False when this digest was already there."""
    index = f"{published.prefix}/{INDEX}"
    if store.exists(index):
        return False
    for rel in published.files:
        store.put_file(f"{published.prefix}/{rel}", source / rel)
    for rel in published.dirs:
        store.put_if_absent(f"{published.prefix}/{rel}/{MARKER}", b"")
    store.put_if_absent(index, json.dumps(published.to_json(), sort_keys=True, indent=1).encode())
    return True


def triton_url(store_url: str, prefix: str, env: Mapping[str, str]) -> str:
    """The ``--model-repository`` value for a prefix of the store, in Triton's own URL forms."""
    parts = urlsplit(store_url)
    path = "/".join(p for p in (parts.path.strip("/"), prefix) if p)
    if parts.scheme in {"s3", "s3a"}:
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if not endpoint:
            return f"s3://{parts.hostname}/{path}"
        # Another S3 service than AWS: Triton takes its host and port in the path (https spelled out).
        end = urlsplit(endpoint)
        port = end.port or (443 if end.scheme == "https" else 80)
        scheme = "https://" if end.scheme == "https" else ""
        return f"s3://{scheme}{end.hostname}:{port}/{parts.hostname}/{path}"
    if parts.scheme == "gs":
        return f"gs://{parts.hostname}/{path}"
    if parts.scheme in {"az", "azure", "abfs", "abfss"}:
        return f"as://{env.get('AZURE_STORAGE_ACCOUNT_NAME', '<account>')}/{parts.hostname}/{path}"
    local = Path(parts.path) if parts.scheme == "file" else Path(store_url)
    return str(local / prefix)


def publish(model: str, store: Store, source: Path) -> str:
    """Publish ``source`` as ``model``; returns the line a server is started with."""
    published = scan_repository(model, source)
    fresh = upload(store, source, published)
    store.put_bytes(f"repos/{model}/{LATEST}", published.digest.encode())
    what = "published" if fresh else "already published"
    log.info("publish: %s %s as %s (%d files)", what, source, published.prefix, len(published.files))
    return f"--model-repository={triton_url(store.url, published.prefix, os.environ)}"


def run_with_store(task: str, command: Callable[[Store], str]) -> TaskFailed | None:
    """Doit action body of a store command: ``command`` returns the tritonserver argument that serves its result."""
    try:
        line = command(store_from_settings(task))
    except UserError as exc:
        return TaskFailed(str(exc))
    except StoreError as exc:
        return TaskFailed(f"{task}: {exc}")
    print(f"serve it with: tritonserver {line}")  # noqa: T201 - the command's result
    return None


def action(model: str) -> TaskFailed | None:
    """Doit action of ``publish:<m>``."""
    return run_with_store(f"publish:{model}", lambda store: publish(model, store, REPOS / model))


def publish_tasks(graph: Graph) -> list[dict[str, Any]]:
    """``publish:<m>`` for every model; a swept model publishes the variant promoted to repos/<m>."""
    return [
        {
            "name": spec.name,
            "doc": f"upload repos/{spec.name} to the store as repos/{spec.name}/<digest>/ and print how to serve it",
            "actions": [(action, [spec.name])],
            "task_dep": [] if spec.variants else [graph.stage_of("repo", spec.name).task_name],
            "uptodate": [False],
            "verbosity": 2,
        }
        for spec in graph.specs
    ]
