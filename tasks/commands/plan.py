"""plan: every stage of the selected models with its action key and where its output would come from.

``local``: the output here matches the key; ``cache``: the store has an entry ``ac/<key>``;
``build``: neither, or the key cannot be known yet.  Keys chain through manifest digests:
a local upstream gives its manifest.json, a cached one the manifest its entry carries (the
digest of exactly the bytes a restore writes), and an upstream that must build leaves every key
below it unknown.  Nothing is built or downloaded; only ``ac/`` entries (and platform records)
are read.

``platform=l4,h100 toolchain_id=<id>`` plans for GPU builders recorded with ``doit platform``
(tasks/commands/platforms.py) instead of this machine.  The JSON (``json=<file>``) carries a GitHub
Actions matrix of the models that still need a builder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from tasks.commands import platforms
from tasks.core import cache, fsops, hashing, manifest
from tasks.core.errors import UserError
from tasks.core.inputnames import input_names
from tasks.core.stage import Stage, action_key, input_paths, output_problem
from tasks.core.store import Store, StoreError
from tasks.spec.modelspec import ModelSpec
from tasks.stages.graph import STAGE_ORDER, Graph

log = logging.getLogger(__name__)

LOCAL, CACHE, BUILD = "local", "cache", "build"


@dataclass(frozen=True)
class Planned:
    task: str
    source: str
    key: str | None
    cacheable: bool
    # The digest manifest.json will have once the stage is local; None when it must build.
    manifest_digest: str | None = None


class Lookup:
    """The store as plan reads it: one warning and no cache after its first failure."""

    def __init__(self, url: str | None) -> None:
        self.store: Store | None = None
        if url is not None:
            try:
                self.store = Store(url)
            except (ValueError, StoreError) as exc:
                self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        log.warning("plan: cache store unavailable (%s); planning without it", exc)
        self.store = None

    def get(self, key: str) -> bytes | None:
        if self.store is None:
            return None
        try:
            return self.store.get_bytes(key)
        except StoreError as exc:
            self._give_up(exc)
            return None


def entry_manifest(raw: bytes | None) -> manifest.Manifest | None:
    """The manifest an ``ac/<key>`` entry carries."""
    entry = cache.parse_entry(raw)
    return entry.manifest if entry is not None else None


def restored_digest(stage: Stage, content: manifest.Manifest) -> str:
    """sha256 of the manifest.json a restore of ``content`` publishes (tasks/core/stage.py ``_publish``)."""
    published = manifest.Manifest(stage.name, stage.model, stage.target, content.files, content.dirs)
    data = published.to_json() if stage.part is None else manifest.part(published, stage.part, stage.parts[stage.part])
    return hashlib.sha256(fsops.json_text(data).encode()).hexdigest()


class Planner:
    """Plans stages depth first, each once; ``record`` is a GPU builder's toolchain (None: this machine)."""

    def __init__(self, lookup: Lookup, record: platforms.Record | None = None) -> None:
        self.lookup = lookup
        self.record = record
        self.done: dict[str, Planned] = {}

    def plan(self, stage: Stage) -> Planned:
        """A view of one part of a stage's output (``Stage.only``) is planned as its own row: its digest is the part's."""
        name = stage.manifest_path.as_posix()
        if name not in self.done:
            self.done[name] = self._plan(stage)
        return self.done[name]

    def _inputs(self, stage: Stage) -> dict[str, str] | None:
        """The inputs as ``input_digests`` names them, with upstream manifests' digests as planned."""
        digests: list[str] = []
        for dep in stage.deps.values():
            digest = self.plan(dep).manifest_digest
            if digest is None:
                return None
            digests.append(digest)
        for path in stage.files:
            if not path.is_file():
                return None
            digests.append(hashing.digest(path))
        return dict(zip(input_names(input_paths(stage)), digests, strict=True))

    def _as_built_there(self, stage: Stage) -> Stage | None:
        if self.record is None or "toolchain" not in stage.params:
            return stage
        value = platforms.retarget(stage.params["toolchain"], self.record)
        return None if value is None else replace(stage, params={**stage.params, "toolchain": value})

    def _plan(self, stage: Stage) -> Planned:
        inputs = self._inputs(stage)
        there = self._as_built_there(stage)
        if inputs is None or there is None:
            return Planned(stage.task_name, BUILD, None, stage.cached)
        key = action_key(there, inputs)
        if self.record is None and _local(stage, key):
            return Planned(stage.task_name, LOCAL, key, stage.cached, hashing.digest(stage.manifest_path))
        content = entry_manifest(self.lookup.get(f"ac/{key}")) if stage.cached else None
        if content is not None:
            return Planned(stage.task_name, CACHE, key, stage.cached, restored_digest(stage, content))
        return Planned(stage.task_name, BUILD, key, stage.cached)


def _local(stage: Stage, key: str) -> bool:
    record = fsops.read_json(stage.meta / manifest.RECORD)
    return isinstance(record, dict) and record.get("key") == key and output_problem(stage) is None


def model_stages(graph: Graph, spec: ModelSpec) -> list[Stage]:
    """Every stage ``build:<m>`` runs (members' stages included), upstream first."""
    roots = [graph.last_stage(v.variant) for v in spec.variants or (spec,)]
    compared = graph.find("compare", spec.name)
    seen: dict[str, Stage] = {}
    pending = [*roots, *([compared] if compared else [])]
    while pending:
        stage = pending.pop()
        if stage.task_name not in seen:
            seen[stage.task_name] = stage
            pending += [dep.whole for dep in stage.deps.values()]
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    return sorted(seen.values(), key=lambda s: (order.get(s.name, len(order)), s.model))


def plan_model(planner: Planner, graph: Graph, spec: ModelSpec, platform: str | None) -> dict[str, Any]:
    rows = [planner.plan(stage) for stage in model_stages(graph, spec)]
    to_build = [r.task for r in rows if r.cacheable and r.source == BUILD]
    return {
        "model": spec.name,
        "kind": spec.kind,
        "image": platforms.image_of(spec.kind),
        "platform": platform,
        "all_cached": not to_build,
        "to_build": to_build,
        "stages": [asdict(r) for r in rows],
    }


def matrix(plans: Sequence[dict[str, Any]], *, ensembles: bool) -> dict[str, list[dict[str, Any]]]:
    """GitHub Actions ``strategy.matrix``: one entry per model x platform that still needs a builder."""
    keep = [p for p in plans if not p["all_cached"] and (p["kind"] == "ensemble") == ensembles]
    return {"include": [{"model": p["model"], "image": p["image"], "platform": p["platform"]} for p in keep]}


def table(plans: Sequence[dict[str, Any]]) -> str:
    lines = []
    for plan in plans:
        where = f" on {plan['platform']}" if plan["platform"] else ""
        verdict = "every cached stage available" if plan["all_cached"] else f"{len(plan['to_build'])} cached stage(s) to build"
        lines.append(f"{plan['model']}{where}: {verdict}")
        lines += [f"  {r['task']:<28} {r['source']:<6} {(r['key'] or '-')[:16]}" for r in plan["stages"]]
    return "\n".join(lines)


@dataclass(frozen=True)
class Options:
    models: tuple[str, ...]
    platforms: tuple[str, ...]
    toolchain_id: str
    json_path: Path | None


VARIABLES = ("model", "platform", "toolchain_id", "json")


def options_from(variables: Mapping[str, str]) -> Options:
    """Doit variables ``model=a,b`` ``platform=l4,h100`` ``toolchain_id=<id>`` ``json=<file>``."""
    names = tuple(platforms.check_name("platform", n) for n in variables.get("platform", "").split(",") if n)
    toolchain_id = variables.get("toolchain_id", "")
    if names and not toolchain_id:
        raise UserError("toolchain_id", "planning for a platform needs the id its builders recorded (doit platform toolchain_id=...)")
    models = tuple(n for n in variables.get("model", "").split(",") if n)
    json_path = variables.get("json", "")
    return Options(
        models, names, platforms.check_name("toolchain_id", toolchain_id) if names else "", Path(json_path) if json_path else None
    )


def _selected(graph: Graph, models: Sequence[str]) -> list[ModelSpec]:
    known = {s.name: s for s in graph.specs}
    unknown = [m for m in models if m not in known]
    if unknown:
        raise UserError("model", f"unknown model(s) {', '.join(unknown)}; models: {', '.join(sorted(known))}")
    return [known[m] for m in models] if models else list(graph.specs)


def _platform_plans(graph: Graph, specs: Sequence[ModelSpec], lookup: Lookup, opts: Options) -> Iterator[dict[str, Any]]:
    if not opts.platforms:
        planner = Planner(lookup)
        yield from (plan_model(planner, graph, spec, None) for spec in specs)
        return
    for platform in opts.platforms:
        planners: dict[str, Planner] = {}
        for spec in specs:
            image = platforms.image_of(spec.kind)
            if image not in planners:
                raw = lookup.get(platforms.record_key(platform, opts.toolchain_id, image))
                record = json.loads(raw) if raw is not None else {}
                if raw is None:
                    log.warning(
                        "plan: no toolchain recorded for %s/%s/%s yet: its GPU stages will build", platform, opts.toolchain_id, image
                    )
                planners[image] = Planner(lookup, record)
            yield plan_model(planners[image], graph, spec, platform)


def run(graph: Graph, variables: Mapping[str, str]) -> TaskFailed | None:
    """Doit action: print the plan; write the JSON the nightly workflow reads."""
    try:
        opts = options_from(variables)
        specs = _selected(graph, opts.models)
        settings = cache.current()
        lookup = Lookup(settings.url if settings.reads else None)
        plans = list(_platform_plans(graph, specs, lookup, opts))
    except UserError as exc:
        return TaskFailed(str(exc))
    print(table(plans))  # noqa: T201 - the plan is this command's output
    if opts.json_path is not None:
        data = {
            "target": graph.target.name,
            "store": lookup.store.url if lookup.store else None,
            "plans": plans,
            "matrix": matrix(plans, ensembles=False),
            "ensembles": matrix(plans, ensembles=True),
        }
        fsops.write_json_atomic(opts.json_path, data)
    return None


def plan_task(graph: Graph, variables: Mapping[str, str]) -> dict[str, Any]:
    return {
        "doc": "each stage's action key and source (local / cache / build): model=a,b json=<file> platform=<gpus> toolchain_id=<id>",
        "actions": [(run, [graph, variables])],
        "uptodate": [False],
        "verbosity": 2,
    }
