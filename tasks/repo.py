"""repo: ``repos/<model>/``, a Triton model repository assembled from upstream outputs.

Files are hardlinks into ``build/`` (a multi-GB plan is never copied unless build
and repos sit on different filesystems).  The finished tree replaces the old one
in a single rename; if anything fails before that, the previous repository stays
as it was and can still be served.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tasks import fsops, layout
from tasks.errors import UserError
from tasks.stage import StageContext

log = logging.getLogger(__name__)

CODE_VERSION = "1"


def link_tree(src: Path, dest: Path) -> int:
    """Hardlink every file under ``src`` to the same place under ``dest``; return how many were copied."""
    if src.is_file():
        return 0 if fsops.link_or_copy(src, dest) else 1
    copies = 0
    for dirpath, _, filenames in os.walk(src):
        for name in filenames:
            path = Path(dirpath) / name
            copies += 0 if fsops.link_or_copy(path, dest / path.relative_to(src)) else 1
    return copies


def link_model(model: layout.TritonModel, config_dir: Path, inputs: dict[str, Path], dest: Path) -> int:
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


MEMBER_ROLES = ("config", "engine", "hf")


def link_models(models: list[layout.TritonModel], inputs: dict[str, Path], out: Path, owner: str) -> int:
    copies = 0
    for model in models:
        config_dir = inputs["config"] / model.name
        if not config_dir.is_dir():
            raise UserError(f"repo {model.name}", f"{config_dir} is missing; run doit config:{owner}")
        if (out / model.name).exists():
            raise UserError(f"repo {model.name}", f"two models of this repository are named {model.name}; rename one model file")
        copies += link_model(model, config_dir, inputs, out / model.name)
    return copies


def member_inputs(inputs: dict[str, Path], member: str) -> dict[str, Path]:
    """A member's upstream outputs, which the graph passes in as ``<member>:<role>``."""
    return {role: inputs[f"{member}:{role}"] for role in MEMBER_ROLES}


def action(ctx: StageContext) -> None:
    params = ctx.params
    searchable = bool(params.get("searchable"))
    kind, name, family = params["kind"], params["name"], params.get("family", "")
    models = layout.triton_models(kind, name, params["target"], ctx.inputs.get("hf"), family=family, searchable=searchable)
    copies = link_models(models, ctx.inputs, ctx.out, params["name"])
    # An ensemble's members are linked in whole, so repos/<ensemble> serves on its own.
    for member in params.get("members", {}).values():
        inputs = member_inputs(ctx.inputs, member["name"])
        member_models = layout.triton_models("encoder", member["name"], params["target"], inputs["hf"], family=member["family"])
        copies += link_models(member_models, inputs, ctx.out, member["name"])
    ctx.record["copied_files"] = copies
    if copies:
        log.warning("repo: %d files were copied, not hardlinked (build/ and repos/ are on different filesystems)", copies)
