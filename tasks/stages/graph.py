"""The graph: every stage of every model, grouped by stage name, and how a stage gets its owner and folders.

Each stage module (``tasks/stages/<name>.py``) builds its own node from a ``ModelGraph``: its params
are exactly what it reads (its YAML block(s), the toolchain items its output depends on, the target
where it matters, its code version).  ``kinds`` wires the stages each kind of model has.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core import fsops
from tasks.core.stage import Action, Stage, to_task
from tasks.spec.modelspec import ModelSpec
from tasks.tools import toolchain

BUILD = Path("build")
REPOS = Path("repos")
MODELS = Path("models")
STAGE_ORDER = ("fetch", "convert", "export", "engine", "index", "config", "repo", "bench", "compare")
# The blocks each shareable stage reads: the variants of a sweep that agree on them share one
# build of it (fetch always; convert unless convert.* is swept ...).  Config, repo, index and
# bench belong to one variant each: they carry its repository path or its results.
SHARED_BY: dict[str, tuple[str, ...]] = {
    "fetch": (),
    "convert": ("convert",),
    "export": ("export",),
    "engine": ("convert", "export", "engine"),
}


def stage_owner(spec: ModelSpec, stage: str) -> str:
    """The name a stage of ``spec`` is built under: shared by the variants agreeing on what it reads, else the variant's."""
    return spec.owner(SHARED_BY[stage]) if stage in SHARED_BY else spec.variant


@dataclass
class Graph:
    """Every stage of every model, for one resolved target."""

    target: toolchain.Target
    specs: list[ModelSpec]
    stages: dict[str, list[Stage]] = field(default_factory=dict)

    def find(self, name: str, model: str) -> Stage | None:
        return next((s for s in self.stages.get(name, []) if s.model == model), None)

    def add(self, stage: Stage) -> Stage:
        """Add a stage, or return the same one a sibling variant already added."""
        known = self.find(stage.name, stage.model)
        if known is None:
            self.stages.setdefault(stage.name, []).append(stage)
            return stage
        if known.saved_params != stage.saved_params or known.deps != stage.deps:
            raise RuntimeError(f"{stage.task_name}: variants sharing this stage disagree on its params or inputs")
        return known

    def tasks(self, name: str) -> Iterator[dict[str, Any]]:
        for stage in self.stages.get(name, []):
            yield to_task(stage)

    def last_stage(self, model: str) -> Stage:
        return next(s for name in reversed(STAGE_ORDER) for s in self.stages.get(name, []) if s.model == model)

    def stage_of(self, name: str, model: str) -> Stage:
        found = self.find(name, model)
        if found is None:
            raise KeyError(f"{name}:{model}")
        return found


def rel(path: Path) -> Path:
    """Paths under the project stay relative, so a moved checkout keeps its action keys."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


@dataclass(frozen=True)
class ModelGraph:
    """Builds the stages of one model: shared fields filled once."""

    graph: Graph
    spec: ModelSpec

    @property
    def target(self) -> str:
        return self.graph.target.name

    def stage(self, name: str, params: Mapping[str, Any], action: Action, doc: str, **kw: Any) -> Stage:  # noqa: ANN401
        """A stage whose params name the target keeps one output per target (``build/<m>/<stage>/<target>/``).

        Switching target and back then finds the first target's outputs where it left them.
        """
        owner = stage_owner(self.spec, name)
        out = BUILD / owner
        kw.setdefault("log_dir", out / "logs")
        kw.setdefault("source", self.spec.file)
        if "target" in params:
            kw.setdefault("target", self.target)
            doc = f"{doc} [target {self.target}]"
        return self.graph.add(Stage(name, owner, params, kw.pop("out_dir", output_dir(owner, name, params)), action, doc, **kw))


def output_dir(owner: str, name: str, params: Mapping[str, Any]) -> Path:
    """``build/<owner>/<stage>/``, plus ``<target>/`` for a stage whose params name the target."""
    out = BUILD / owner / name
    return out / str(params["target"]) if "target" in params else out


def member_stage(graph: Graph, member: ModelSpec, stage: str) -> Stage:
    """A member's stage: its own, or the one its variant shares with sibling variants."""
    return graph.stage_of(stage, stage_owner(member, stage))


def remove_stale_work_trees() -> None:
    """Work trees and temp files of killed runs (``.<name>.tmp-<pid>``, pid gone) in the folders stages write to.

    Those are ``build/<m>/``, ``build/<m>/<stage>/`` (per-target outputs, timing caches) and ``repos/``;
    a stage that never runs again would otherwise keep its leftover forever.
    """
    fsops.remove_stale_tmp_in(REPOS)
    for model in fsops.subfolders(BUILD):
        fsops.remove_stale_tmp_in(model)
        for folder in fsops.subfolders(model):
            fsops.remove_stale_tmp_in(folder)


def _last_stages(graph: Graph, spec: ModelSpec) -> list[str]:
    if not spec.variants:
        return [graph.last_stage(spec.name).task_name]
    names = [graph.last_stage(v.variant).task_name for v in spec.variants]
    compared = graph.find("compare", spec.name)
    return names + ([compared.task_name] if compared else [])


def build_groups(graph: Graph) -> Iterator[dict[str, Any]]:
    """``build:<model>``: every stage of one model and of all its variants (``doit build`` runs all models).

    Each variant of a sweep also gets its own ``build:<model>@...``.
    """
    for spec in graph.specs:
        yield {
            "name": spec.name,
            "doc": f"all stages of {spec.name} ({spec.file})" + (f", {len(spec.variants)} variants" if spec.variants else ""),
            "actions": None,
            "task_dep": _last_stages(graph, spec),
        }
        for variant in spec.variants:
            yield {
                "name": variant.variant,
                "doc": f"all stages of one variant of {spec.name}",
                "actions": None,
                "task_dep": [graph.last_stage(variant.variant).task_name],
            }
