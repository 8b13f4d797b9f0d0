"""promote: serve one variant of a sweep as ``repos/<model>`` - an explicit step, never part of a build.

The variant's repository is placed as the repo stage places files (artifacts hardlinked, so no GB
copies; files users edit copied) and swapped in with one rename, so a server reading ``repos/<model>``
sees the old or the new tree, never half of one.
Absolute paths into ``repos/<variant>`` (TensorRT-LLM engine paths on target trt) are rewritten to
the promoted location, so the promoted repository does not follow later rebuilds of the variant.
``promoted.json`` at its root says which variant it is and how many server ranks it needs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from tasks.core import fsops
from tasks.core.errors import UserError
from tasks.spec.modelspec import ModelSpec
from tasks.spec.sources import server_ranks
from tasks.stages import repo
from tasks.stages.graph import REPOS, Graph

log = logging.getLogger(__name__)

PROMOTED_FILE = "promoted.json"


def publish(variant: ModelSpec) -> Path:
    """Build ``repos/<model>`` from ``repos/<variant>`` in a work dir and swap it in."""
    source, dest = REPOS / variant.variant, REPOS / variant.name
    if not (source / repo.TOOLCHAIN_FILE).is_file():
        raise UserError(f"promote:{variant.variant}", f"{source} is not a finished repository; run doit build:{variant.variant}")

    def fill(work: Path) -> None:
        fsops.link_tree(source, work)
        rewritten = repo.rewrite_paths(work, source.resolve(), dest.resolve())
        facts: dict[str, Any] = {
            "variant": variant.variant,
            "settings": variant.settings,
            "ranks": server_ranks(variant),
            "promoted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rewritten_configs": rewritten,
        }
        fsops.write_json_atomic(work / PROMOTED_FILE, facts)

    repo.replace_tree(dest, fill)
    return dest


def promoted_ranks(model: str) -> dict[str, Any]:
    """The server ranks of the variant promoted to ``repos/<model>``."""
    path = REPOS / model / PROMOTED_FILE
    facts = fsops.read_json(path)
    if not isinstance(facts, dict) or not isinstance(facts.get("ranks"), dict):
        msg = f"{path} is missing: {model} has a sweep; promote a variant to repos/{model}: doit promote:{model}@... (doit list --all)"
        raise UserError(f"serve:{model}", msg)
    return dict(facts["ranks"])


def promote(variant: ModelSpec) -> TaskFailed | None:
    """Doit action."""
    try:
        publish(variant)
    except UserError as exc:
        return TaskFailed(str(exc))
    log.info("promote: repos/%s now serves %s (doit serve:%s)", variant.name, variant.variant, variant.name)
    return None


def promote_tasks(graph: Graph) -> list[dict[str, Any]]:
    """``promote:<model>@...`` for every variant of every sweep."""
    return [
        {
            "name": variant.variant,
            "doc": f"serve this variant as repos/{spec.name} (builds it first if needed)",
            "actions": [(promote, [variant])],
            "task_dep": [graph.stage_of("repo", variant.variant).task_name],
            "uptodate": [False],
            "verbosity": 2,
        }
        for spec in graph.specs
        for variant in spec.variants
    ]
