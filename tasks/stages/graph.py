"""The graph: model files -> stages -> doit task dicts, grouped by stage name.

Each stage's params are exactly what it reads: its YAML block(s), the toolchain
items its output depends on, the target where it matters, and its code version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tasks.core import cache
from tasks.core.stage import Action, Stage, canonical, to_task
from tasks.spec.modelspec import ModelSpec, Where
from tasks.spec.schema import find_member, load_models
from tasks.spec.sources import calibration_file, corpus_file, prompts_file, server_ranks
from tasks.stages import bench, compare, config, convert, engine, engine_llm, export, fetch, index, repo
from tasks.tools import toolchain, trtexec, trtllm
from tasks.triton import layout, repository

log = logging.getLogger(__name__)

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


# The engine keys the LLM templates read (the rest only shape trtllm-build's argv).
LLM_CONFIG_ENGINE_KEYS = ("max_beam_width", "max_input_len", "max_output_len")


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
        if canonical(known.params) != canonical(stage.params) or known.deps != stage.deps:
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


def _rel(path: Path) -> Path:
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
        owner = stage_owner(self.spec, name)
        out = BUILD / owner
        kw.setdefault("log_dir", out / "logs")
        return self.graph.add(Stage(name, owner, params, kw.pop("out_dir", out / name), action, doc, **kw))

    def fetch(self) -> Stage:
        # Every variant of a sweep shares one fetch: look its source up (a Hub query, a folder walk) once.
        shared = self.graph.find("fetch", stage_owner(self.spec, "fetch"))
        if shared is not None:
            return shared
        folder, files, source = fetch.source_files(self.spec)
        params = {"source": source, "code": fetch.CODE_VERSION}
        action = partial(fetch.action, folder=folder)
        doc = f"checkpoint of {self.spec.name} from {self.spec.file}"
        return self.stage("fetch", params, action, doc, files=[_rel(p) for p in files], cached=cache.current().fetch)

    def config(self, deps: Mapping[str, Stage], params: Mapping[str, Any]) -> Stage:
        spec = self.spec
        models = layout.triton_models(spec.kind, spec.name, self.target, None, family=spec.family, searchable="index" in params)
        templates = repository.template_files(models)
        full = {"name": spec.name, "kind": spec.kind, "family": spec.family, **params, "target": self.target, "code": config.CODE_VERSION}
        doc = f"Triton configs of {spec.variant}"
        return self.stage("config", full, config.action, doc, deps=deps, files=[_rel(p) for p in templates], target=self.target)

    def repo(self, deps: Mapping[str, Stage], members: Mapping[str, Any] | None = None) -> Stage:
        m = self.spec.variant
        params: dict[str, Any] = {"name": self.spec.name, "kind": self.spec.kind, "family": self.spec.family, "target": self.target}
        params |= {"members": members, "searchable": "index" in deps} if members else {}
        params["code"] = repo.CODE_VERSION
        doc = f"Triton repository repos/{m}"
        return self.stage("repo", params, repo.action, doc, deps=deps, target=self.target, out_dir=REPOS / m, meta_dir=BUILD / m / "repo")

    def bench(self, published: Stage, trt_tools: Mapping[str, str]) -> Stage | None:
        """Only models whose file has a ``bench:`` block are benchmarked."""
        spec = self.spec
        if "bench" not in spec.written:
            return None
        tools = trt_tools if self.target == "trt" else toolchain.package_versions(*bench.CPU_TOOLCHAIN)
        params = {
            "bench": spec.block("bench"),
            # Recorded with the results, so a result always names the flags of the engine it measured.
            "engine": spec.block("engine"),
            "kind": spec.kind,
            "name": spec.name,
            "variant": spec.variant,
            "yaml": str(spec.file),
            "ranks": server_ranks(spec),
            "target": self.target,
            "toolchain": tools,
            "code": bench.CODE_VERSION,
        }
        prompts = prompts_file(spec)
        files = [_rel(prompts)] if prompts is not None else []
        doc = f"benchmark of repos/{spec.variant} -> results/{spec.name}/"
        outputs = bench.output_files(spec.variant)
        return self.stage("bench", params, bench.action, doc, deps={"repo": published}, files=files, target=self.target, published=outputs)


def encoder_stages(model: ModelGraph) -> None:
    spec, target = model.spec, model.target
    fetched = model.fetch()
    versions = toolchain.package_versions(*export.TOOLCHAIN)
    exported = model.stage(
        "export", {"export": spec.block("export"), "family": spec.family, "toolchain": versions, "code": export.CODE_VERSION},
        export.action, f"ONNX export of {spec.name}", deps={"hf": fetched}, cached=True,
    )  # fmt: skip
    tools = trtexec.trt_fingerprint() if target == "trt" else toolchain.package_versions(*engine.CPU_TOOLCHAIN)
    engine_block = dict(spec.block("engine"))
    calibration = calibration_file(spec)
    # The cache's content is an input (files); the param is its path as trtexec gets it.
    engine_block["calibration_cache"] = _rel(calibration).as_posix() if calibration else None
    built = model.stage(
        "engine", {"engine": engine_block, "target": target, "toolchain": tools, "code": engine.CODE_VERSION},
        engine.action, f"{target} engine of {stage_owner(spec, 'engine')}", deps={"onnx": exported}, target=target,
        files=[_rel(calibration)] if calibration else [], cached=True, fingerprint=trtexec.trt_fingerprint if target == "trt" else None,
    )  # fmt: skip
    # The tokenizer truncates to the engine's sequence limit; an image has none.
    seq = {k: v for k, v in spec.block("engine").items() if k == "max_seq_len"}
    configured = model.config({"hf": fetched}, {"triton": spec.block("triton"), "engine": seq})
    published = model.repo({"config": configured, "engine": built, "hf": fetched})
    model.bench(published, tools)


def llm_stages(model: ModelGraph) -> None:
    spec, target = model.spec, model.target
    fetched = model.fetch()
    versions = toolchain.package_versions(*convert.TOOLCHAIN)
    converted = model.stage(
        "convert", {"convert": spec.block("convert"), "family": spec.family, "toolchain": versions, "code": convert.CODE_VERSION},
        convert.action, f"TRT-LLM checkpoint of {spec.name}", deps={"hf": fetched}, cached=True,
    )  # fmt: skip
    tools = trtllm.trt_fingerprint() if target == "trt" else {}
    built = model.stage(
        "engine",
        {"engine": spec.block("engine"), "family": spec.family, "target": target, "toolchain": tools, "code": engine_llm.CODE_VERSION},
        engine_llm.action, f"{target} engines of {stage_owner(spec, 'engine')}", deps={"checkpoint": converted}, target=target,
        cached=True, fingerprint=trtllm.trt_fingerprint if target == "trt" else None,
    )  # fmt: skip
    engine_keys = {k: spec.block("engine")[k] for k in LLM_CONFIG_ENGINE_KEYS}
    params: dict[str, Any] = {"triton": spec.block("triton"), "engine": engine_keys}
    configured = model.config({"hf": fetched}, params)
    published = model.repo({"config": configured, "engine": built, "hf": fetched})
    model.bench(published, tools)


def member_stage(graph: Graph, member: ModelSpec, stage: str) -> Stage:
    """A member's stage: its own, or the one its variant shares with sibling variants."""
    return graph.stage_of(stage, stage_owner(member, stage))


def ensemble_stages(model: ModelGraph) -> None:
    """Config, repository and an optional index: everything else comes from the members' own stages.

    The repository depends on each member's config, engine and checkpoint manifests, so a
    member's rebuilt engine rebuilds it, and nothing else of another model does.  A member
    named ``<model>@...`` is that variant of a swept model; its Triton models keep the model's name.
    """
    graph, spec = model.graph, model.spec
    members = {
        role: find_member(graph.specs, name, Where(str(spec.file), f"members.{role}"))
        for role, name in spec.block("members").items()
        if name is not None
    }
    described = {role: {"name": m.name, "family": m.family} for role, m in members.items()}
    config_params: dict[str, Any] = {"triton": spec.block("triton"), "members": {role: m.name for role, m in members.items()}}
    deps: dict[str, Stage] = {}
    for member in members.values():
        deps |= {repo.member_key(member.name, role): member_stage(graph, member, stage) for role, stage in repo.MEMBER_STAGES.items()}
    corpus = corpus_file(spec)
    if corpus is not None:
        settings = spec.block("index")
        config_params["index"] = {"member": settings["member"], "top_k": settings["top_k"]}
        deps["index"] = ensemble_index(model, members[settings["member"]], corpus)
    configured = model.config({role: member_stage(graph, m, "config") for role, m in members.items()}, config_params)
    model.repo({"config": configured, **deps}, described)


def ensemble_index(model: ModelGraph, member: ModelSpec, corpus: Path) -> Stage:
    """``index:<m>``: the corpus embedded by one member, served from that member's stage outputs."""
    spec, graph = model.spec, model.graph
    settings = spec.block("index")
    tools = trtexec.trt_fingerprint() if model.target == "trt" else toolchain.package_versions(*bench.CPU_TOOLCHAIN)
    params = {
        "index": {k: settings[k] for k in ("member", "batch_size")},  # top_k is the search model's, not the index's
        "member": {"name": member.name, "family": member.family},
        "corpus": _rel(corpus).as_posix(),
        "target": model.target,
        "toolchain": tools,
        "code": index.CODE_VERSION,
    }
    deps = {role: member_stage(graph, member, stage) for role, stage in repo.MEMBER_STAGES.items()}
    files = [_rel(p) for p in (corpus, *spec.corpus_images)]
    doc = f"vector index of {corpus} embedded by {member.variant}"
    fingerprint = trtexec.trt_fingerprint if model.target == "trt" else None
    return model.stage(
        "index", params, index.action, doc, deps=deps, files=files, target=model.target, cached=True, fingerprint=fingerprint
    )


BUILDERS: dict[str, Callable[[ModelGraph], None]] = {"encoder": encoder_stages, "llm": llm_stages, "ensemble": ensemble_stages}


def build_graph(target: toolchain.Target, models_dir: Path = MODELS) -> Graph:
    graph = Graph(target, load_models(models_dir))
    # Ensembles last: they depend on their members' stages.
    for spec in sorted(graph.specs, key=lambda s: s.kind == "ensemble"):
        for variant in spec.variants or (spec,):
            BUILDERS[spec.kind](ModelGraph(graph, variant))
        if spec.variants and "compare" in spec.blocks:
            compare_stage(graph, spec)
    return graph


def compare_stage(graph: Graph, spec: ModelSpec) -> Stage:
    """``compare:<m>``: every variant's benchmark in one table and plot, and the best variant named."""
    benches = {v.variant: graph.stage_of("bench", v.variant) for v in spec.variants}
    settings = {v.variant: v.settings for v in spec.variants}
    params = {"name": spec.name, "compare": spec.block("compare"), "variants": settings, "code": compare.CODE_VERSION}
    doc = f"the variants of {spec.name} side by side -> results/{spec.name}/summary.csv, summary.png, best.json"
    return ModelGraph(graph, spec).stage("compare", params, compare.action, doc, deps=benches, published=compare.output_files(spec.name))


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
