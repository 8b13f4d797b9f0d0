"""What each kind of model builds: the stages of an encoder, an LLM and an ensemble, wired in order.

Each stage's params, action and doc are in its own module; this module only says which stage feeds which.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core.stage import Stage
from tasks.spec.modelspec import Where
from tasks.spec.schema import find_member, load_models
from tasks.spec.sources import corpus_file
from tasks.stages import bench, compare, config, convert, engine, engine_llm, export, fetch, index, repo
from tasks.stages.graph import MODELS, Graph, ModelGraph, member_stage
from tasks.tools import toolchain


def encoder_stages(model: ModelGraph) -> None:
    fetched = fetch.stage(model)
    built = engine.stage(model, export.stage(model, fetched))
    configured = config.stage(model, {"hf": fetched}, config.encoder_reads(model.spec))
    published = repo.stage(model, {"config": configured, "engine": built, "hf": fetched})
    bench.stage(model, published, built.params["toolchain"])


def llm_stages(model: ModelGraph) -> None:
    fetched = fetch.stage(model)
    built = engine_llm.stage(model, convert.stage(model, fetched))
    configured = config.stage(model, {"hf": fetched}, config.llm_reads(model.spec))
    published = repo.stage(model, {"config": configured, "engine": built, "hf": fetched})
    bench.stage(model, published, built.params["toolchain"])


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
    reads: dict[str, Any] = {"triton": spec.block("triton"), "members": {role: m.name for role, m in members.items()}}
    deps: dict[str, Stage] = {}
    for member in members.values():
        deps |= {repo.member_key(member.name, role): member_stage(graph, member, stage) for role, stage in repo.MEMBER_STAGES.items()}
    corpus = corpus_file(spec)
    if corpus is not None:
        settings = spec.block("index")
        reads["index"] = {"member": settings["member"], "top_k": settings["top_k"]}
        deps["index"] = index.stage(model, members[settings["member"]], corpus)
    configured = config.stage(model, {role: member_stage(graph, m, "config") for role, m in members.items()}, reads)
    repo.stage(model, {"config": configured, **deps}, described)


BUILDERS: dict[str, Callable[[ModelGraph], None]] = {"encoder": encoder_stages, "llm": llm_stages, "ensemble": ensemble_stages}


def build_graph(target: toolchain.Target, models_dir: Path = MODELS, only: frozenset[str] | None = None) -> Graph:
    """Every model's stages, or those of the models ``only`` names (and their ensembles' members)."""
    graph = Graph(target, load_models(models_dir, only))
    # Ensembles last: they depend on their members' stages.
    for spec in sorted(graph.specs, key=lambda s: s.kind == "ensemble"):
        for variant in spec.variants or (spec,):
            BUILDERS[spec.kind](ModelGraph(graph, variant))
        if spec.variants and "compare" in spec.blocks:
            compare.stage(graph, spec)
    return graph
