"""repo: ``repos/<model>/``, a Triton model repository assembled from upstream outputs.

No file of the repository shares an inode with anything a user edits.  Configs,
python models, tokenizer and preprocessor files are copied: a user who edits one in
``repos/`` edits only the repository, which the next build restores.  Weights and
engines (``SHARED_SUFFIXES``, or any file of ``SHARED_MIN_BYTES`` and more) are
hardlinks to the ``build/`` outputs this project wrote, never to a source folder (fetch
copies those), with the write bits cleared so no user but root writes through them; a
write by root shows in the manifests of both outputs and the next build redoes both.
So a multi-GB plan is never copied.  The finished tree replaces the old one in a single
rename; if anything fails before that, the previous repository stays as it was and can
still be served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tasks.core import fsops, interrupts, manifest
from tasks.core.errors import UserError
from tasks.core.fsops import link_tree
from tasks.core.stage import Stage, StageContext
from tasks.stages import fetch
from tasks.stages.graph import REPOS, ModelGraph
from tasks.tools import toolchain
from tasks.triton import layout, repository

log = logging.getLogger(__name__)

# 4: configs, python models and tokenizer files are copies, no longer hardlinks.
CODE_VERSION = "4"
TOOLCHAIN_FILE = toolchain.REPOSITORY_FILE
T = TypeVar("T")


def link_model(model: repository.TritonModel, config_dir: Path, inputs: dict[str, Path], dest: Path) -> int:
    """One Triton model directory: its filled config tree plus its artifacts and empty dirs."""
    copies = link_tree(config_dir, dest)
    for art in model.artifacts:
        src = inputs[art.role] / art.source
        if not src.exists():
            if art.required:
                raise UserError(f"repo {model.name}", f"{src} is missing; the {art.role} stage did not produce {art.source}")
            continue
        copies += link_tree(src, dest / art.dest)
    for rel in model.empty_dirs:
        (dest / rel).mkdir(parents=True, exist_ok=True)
    return copies


def rewrite_paths(tree: Path, old: Path, new: Path) -> int:
    """Point ``config.pbtxt`` paths under ``old`` at ``new``; return how many files changed.

    Each changed file is replaced, never edited in place.
    """
    if any(c in str(new) for c in '"\\\n'):
        # The paths are pbtxt string literals.
        raise UserError(str(tree), f"the repository path {str(new)!r} holds a quote, backslash or newline; move the project")
    changed = 0
    for config in sorted(tree.rglob("config.pbtxt")):
        text = config.read_text(encoding="utf-8")
        updated = text.replace(f"{old}/", f"{new}/").replace(f'"{old}"', f'"{new}"')
        if updated != text:
            config.unlink()
            config.write_text(updated, encoding="utf-8")
            changed += 1
    return changed


# What a repository takes from each member of an ensemble: role -> the member's stage giving it.
MEMBER_STAGES = {"config": "config", "engine": "engine", "hf": "fetch"}


def replace_tree(dest: Path, fill: Callable[[Path], T]) -> T:
    """Fill a private sibling of ``dest`` and swap it in with one rename (promote, pull).

    A stop or an error before the swap leaves ``dest`` as it was; the work tree never outlives the call.
    """
    work = fsops.tmp_sibling(dest)
    with interrupts.uninterrupted():
        fsops.remove_stale_tmp(dest)
    try:
        work.mkdir(parents=True)
        result = fill(work)
        interrupts.raise_if_interrupted()
        with interrupts.uninterrupted():
            old = fsops.swap_in(work, dest)
            if old is not None:
                fsops.remove_tree(old)
    finally:
        with interrupts.uninterrupted():
            if work.exists():
                fsops.remove_tree(work)
    return result


def link_models(models: list[repository.TritonModel], inputs: dict[str, Path], out: Path, owner: str) -> int:
    copies = 0
    for model in models:
        config_dir = inputs["config"] / model.name
        if not config_dir.is_dir():
            raise UserError(f"repo {model.name}", f"{config_dir} is missing; run doit config:{owner}")
        if (out / model.name).exists():
            raise UserError(f"repo {model.name}", f"two models of this repository are named {model.name}; rename one model file")
        copies += link_model(model, config_dir, inputs, out / model.name)
    return copies


def member_key(member: str, role: str) -> str:
    """How the graph names a member's upstream output among an ensemble's inputs."""
    return f"{member}:{role}"


def member_inputs(inputs: dict[str, Path], member: str) -> dict[str, Path]:
    """A member's upstream outputs, which the graph passes in as ``<member>:<role>``."""
    return {role: inputs[member_key(member, role)] for role in MEMBER_STAGES}


def link_member(member: Mapping[str, str], inputs: dict[str, Path], target: str, out: Path) -> int:
    """A member encoder's models (``member``: its name and family), from its own config, engine and checkpoint."""
    models = layout.triton_models("encoder", member["name"], target, inputs["hf"], family=member["family"])
    return link_models(models, inputs, out, member["name"])


def engine_toolchain(engine_dir: Path) -> dict[str, Any]:
    """The toolchain an engine stage recorded (TensorRT / TensorRT-LLM versions, GPU), from its action record."""
    record = fsops.read_json(engine_dir / manifest.RECORD)
    params = record.get("params") if isinstance(record, dict) else None
    toolchain = params.get("toolchain") if isinstance(params, dict) else None
    return dict(toolchain) if isinstance(toolchain, dict) else {}


def write_toolchain(ctx: StageContext, engines: dict[str, Path]) -> None:
    """``toolchain.json`` at the repository root (Triton ignores files there): what built each model's engines.

    It travels with the repository, so the launcher can refuse to serve engines on a TensorRT,
    TensorRT-LLM or GPU other than the one that built them.
    """
    built = {name: engine_toolchain(folder) for name, folder in engines.items()}
    fsops.write_json_atomic(ctx.out / TOOLCHAIN_FILE, {"target": ctx.params["target"], "engines": built})


def action(ctx: StageContext) -> None:
    params = ctx.params
    searchable = bool(params.get("searchable"))
    kind, name, family = params["kind"], params["name"], params.get("family", "")
    models = layout.triton_models(kind, name, params["target"], ctx.inputs.get("hf"), family=family, searchable=searchable)
    copies = link_models(models, ctx.inputs, ctx.out, params["name"])
    engines: dict[str, Path] = {}
    # An ensemble's members are linked in whole, so repos/<ensemble> serves on its own.
    for member in params.get("members", {}).values():
        inputs = member_inputs(ctx.inputs, member["name"])
        copies += link_member(member, inputs, params["target"], ctx.out)
        engines[member["name"]] = inputs["engine"]
    if "engine" in ctx.inputs:
        engines[name] = ctx.inputs["engine"]
    write_toolchain(ctx, engines)
    # Absolute paths the config stage left at the marker root now name this repository.
    rewrite_paths(ctx.out, repository.REPOSITORY_MARKER, (ctx.stage.served or ctx.stage.out_dir).resolve())
    ctx.record["copied_files"] = copies
    if copies:
        log.warning("repo: %d artifacts were copied, not hardlinked (build/ and repos/ are on different filesystems)", copies)


def checkpoint_part(fetched: Stage, kind: str, target: str) -> Stage:
    """What a repository takes from a checkpoint: an encoder's front files, an LLM's tokenizer, on cpu the whole LLM."""
    if kind == "llm":
        return fetched if target == "cpu" else fetched.only(fetch.TOKENIZER)
    return fetched.only(fetch.FRONT)


def stage(model: ModelGraph, deps: Mapping[str, Stage], members: Mapping[str, Any] | None = None) -> Stage:
    """``repo:<m>`` reads the model's name, kind, family and target (and an ensemble's members) -> repos/<m>."""
    spec, m = model.spec, model.spec.variant
    params: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "family": spec.family, "target": model.target}
    params |= {"members": members, "searchable": "index" in deps} if members else {}
    params["code"] = CODE_VERSION
    deps = {role: checkpoint_part(dep, spec.kind, model.target) if dep.name == "fetch" else dep for role, dep in deps.items()}
    doc = f"Triton repository repos/{m}"
    # Built per target in build/<m>/repo/<target>/; repos/<m> serves the last target built, swapped in as hardlinks.
    return model.stage("repo", params, action, doc, deps=deps, served=REPOS / m)
