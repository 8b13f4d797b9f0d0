"""pull: a published repository materialised at a fixed local path on a serving node.

TensorRT-LLM repositories cannot be served from the store: the tensorrtllm backend needs engine and
tokenizer paths on local disk, absolute.  ``pull:<m>`` downloads ``repos/<m>/<digest>/`` (default:
the digest published last) into a work folder, checks every file's sha256 against the index,
rewrites the absolute paths the repository was built with to the pulled location (the repo stage's
rewriter), and swaps the folder in at once, so a server reading it sees the old or the new tree.
Files the previous pull already holds with the same digest are hardlinked, not downloaded again.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from tasks.commands.publish import INDEX, LATEST, Published, prefix_of, run_with_store
from tasks.core import fsops, hashing, manifest
from tasks.core.errors import UserError
from tasks.core.store import Store
from tasks.stages.graph import Graph
from tasks.stages.repo import replace_tree, rewrite_paths

log = logging.getLogger(__name__)

PULLED_FILE = "pulled.json"
DEFAULT_ROOT = Path("pulled")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def resolve_digest(store: Store, model: str, digest: str) -> str:
    if not digest:
        latest = store.get_bytes(f"repos/{model}/{LATEST}")
        if latest is None:
            raise UserError(f"pull:{model}", f"nothing published for {model} in {store.url}; run doit publish:{model} where it was built")
        digest = latest.decode(errors="replace").strip()
    if not _DIGEST.fullmatch(digest):
        raise UserError("digest", f"expected the 64 hex digits doit publish printed, got {digest!r}")
    return digest


def read_index(store: Store, model: str, digest: str) -> Published:
    raw = store.get_bytes(f"{prefix_of(model, digest)}/{INDEX}")
    try:
        published = Published.from_json(json.loads(raw)) if raw is not None else None
    except ValueError:
        published = None
    if published is None or published.model != model or published.digest != digest:
        msg = f"{store.url}/{prefix_of(model, digest)} is not a complete publication of {model} (missing or altered {INDEX})"
        raise UserError(f"pull:{model}", msg)
    return published


def _reuse(previous: Path, rel: str, entry: tuple[int, str], dest: Path) -> bool:
    old = previous / rel
    if manifest.file_problem(old, entry) is not None:
        return False
    fsops.link_or_copy(old, dest)
    return True


def fetch_files(store: Store, published: Published, work: Path, previous: Path) -> int:
    """Fill ``work``; every downloaded file must have the size and sha256 of the index.  Returns downloads."""
    downloads = 0
    for rel, entry in sorted(published.files.items()):
        dest = work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if _reuse(previous, rel, entry, dest):
            continue
        key = f"{published.prefix}/{rel}"
        got = store.get_file(key, dest)
        if got is None or (got.size, got.sha256) != entry:
            raise UserError(f"pull:{published.model}", f"{store.url}/{key} is missing or does not match its sha256; refused")
        hashing.cache().remember(dest, got.sha256)
        downloads += 1
    for rel in published.dirs:
        (work / rel).mkdir(parents=True, exist_ok=True)
    return downloads


def pull(store: Store, model: str, digest: str, dest: Path) -> Published:
    """Materialise the publication at ``dest`` (atomic swap); returns what was pulled."""
    published = read_index(store, model, resolve_digest(store, model, digest))

    def fill(work: Path) -> tuple[int, int]:
        downloads = fetch_files(store, published, work, dest)
        rewritten = rewrite_paths(work, Path(published.root), dest.resolve())
        facts = {"model": model, "digest": published.digest, "store": store.url, "pulled": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        fsops.write_json_atomic(work / PULLED_FILE, {**facts, "rewritten_configs": rewritten, "downloaded_files": downloads})
        return downloads, rewritten

    downloads, rewritten = replace_tree(dest, fill)
    log.info("pull: %s %s at %s (%d downloaded, %d configs rewritten)", model, published.digest[:16], dest, downloads, rewritten)
    return published


def action(model: str, variables: Mapping[str, str]) -> TaskFailed | None:
    """Doit action of ``pull:<m> [dest=<folder>] [digest=<sha256>]``."""
    dest = Path(variables.get("dest") or DEFAULT_ROOT / model)

    def pull_here(store: Store) -> str:
        pull(store, model, variables.get("digest", ""), dest)
        return f"--model-repository={dest.resolve()}"

    return run_with_store(f"pull:{model}", pull_here)


def pull_tasks(graph: Graph, variables: Mapping[str, str]) -> list[dict[str, Any]]:
    """``pull:<m>`` for every model: no build, only the store."""
    return [
        {
            "name": spec.name,
            "doc": f"the published repos/{spec.name} at dest=<folder> (default pulled/{spec.name}); digest=<sha256> (default: latest)",
            "actions": [(action, [spec.name, variables])],
            "uptodate": [False],
            "verbosity": 2,
        }
        for spec in graph.specs
    ]
