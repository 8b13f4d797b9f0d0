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


def _link_config(config_dir: Path, dest: Path) -> int:
    copies = 0
    for dirpath, _, filenames in os.walk(config_dir):
        for name in filenames:
            src = Path(dirpath) / name
            copies += 0 if fsops.link_or_copy(src, dest / src.relative_to(config_dir)) else 1
    return copies


def _link_artifacts(model: layout.TritonModel, inputs: dict[str, Path], dest: Path) -> int:
    copies = 0
    for art in model.artifacts:
        src = inputs[art.role] / art.source
        if not src.is_file():
            if art.required:
                raise UserError(f"repo {model.name}", f"{src} is missing; the {art.role} stage did not produce {art.source}")
            continue
        copies += 0 if fsops.link_or_copy(src, dest / art.dest) else 1
    return copies


def action(ctx: StageContext) -> None:
    copies = 0
    for model in layout.encoder_models(ctx.params["name"], ctx.params["target"]):
        dest = ctx.out / model.name
        config_dir = ctx.inputs["config"] / model.name
        if not config_dir.is_dir():
            raise UserError(f"repo {model.name}", f"{config_dir} is missing; run doit config:{ctx.params['name']}")
        copies += _link_config(config_dir, dest)
        copies += _link_artifacts(model, ctx.inputs, dest)
        for rel in model.empty_dirs:
            (dest / rel).mkdir(parents=True, exist_ok=True)
    ctx.record["copied_files"] = copies
    if copies:
        log.warning("repo: %d files were copied, not hardlinked (build/ and repos/ are on different filesystems)", copies)
