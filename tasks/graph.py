"""The graph: model files -> stages -> doit task dicts, grouped by stage name.

Each stage's params are exactly what it reads: its YAML block(s), the toolchain
items its output depends on, the target where it matters, and its code version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tasks import config, engine, export, fetch, layout, repo, toolchain
from tasks.schema import ModelSpec, load_models
from tasks.stage import Stage, to_task

log = logging.getLogger(__name__)

BUILD = Path("build")
REPOS = Path("repos")
MODELS = Path("models")
STAGE_ORDER = ("fetch", "export", "engine", "config", "repo")


@dataclass
class Graph:
    """Every stage of every model, for one resolved target."""

    target: toolchain.Target
    specs: list[ModelSpec]
    stages: dict[str, list[Stage]] = field(default_factory=dict)

    def add(self, stage: Stage) -> Stage:
        self.stages.setdefault(stage.name, []).append(stage)
        return stage

    def tasks(self, name: str) -> Iterator[dict[str, Any]]:
        for stage in self.stages.get(name, []):
            yield to_task(stage)

    def last_stage(self, model: str) -> Stage:
        return next(s for name in reversed(STAGE_ORDER) for s in self.stages.get(name, []) if s.model == model)


def _rel(path: Path) -> Path:
    """Paths under the project stay relative, so a moved checkout keeps its action keys."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def encoder_stages(graph: Graph, spec: ModelSpec) -> None:
    target = graph.target.name
    m, out = spec.name, BUILD / spec.name
    logs = out / "logs"
    folder, files, source = fetch.source_files(spec)
    fetched = graph.add(
        Stage(
            "fetch",
            m,
            {"source": source, "code": fetch.CODE_VERSION},
            out / "fetch",
            partial(fetch.action, folder=folder),
            f"checkpoint of {m} from {spec.file}",
            files=[_rel(p) for p in files],
            log_dir=logs,
        )
    )
    exported = graph.add(
        Stage(
            "export",
            m,
            {"export": spec.block("export"), "toolchain": toolchain.package_versions(*export.TOOLCHAIN), "code": export.CODE_VERSION},
            out / "export",
            export.action,
            f"ONNX export of {m}",
            deps={"hf": fetched},
            log_dir=logs,
        )
    )
    tools = engine.trt_fingerprint() if target == "trt" else toolchain.package_versions(*engine.CPU_TOOLCHAIN)
    built = graph.add(
        Stage(
            "engine",
            m,
            {"engine": spec.block("engine"), "target": target, "toolchain": tools, "code": engine.CODE_VERSION},
            out / "engine",
            engine.action,
            f"{target} engine of {m}",
            deps={"onnx": exported},
            target=target,
            log_dir=logs,
        )
    )
    models = layout.encoder_models(m, target)
    configured = graph.add(
        Stage(
            "config",
            m,
            {
                "name": m,
                "triton": spec.block("triton"),
                "engine": {"max_seq_len": spec.block("engine")["max_seq_len"]},
                "target": target,
                "code": config.CODE_VERSION,
            },
            out / "config",
            config.action,
            f"Triton configs of {m}",
            deps={"hf": fetched},
            files=[_rel(p) for p in layout.template_files(models)],
            target=target,
            log_dir=logs,
        )
    )
    graph.add(
        Stage(
            "repo",
            m,
            {"name": m, "target": target, "code": repo.CODE_VERSION},
            REPOS / m,
            repo.action,
            f"Triton repository repos/{m}",
            deps={"config": configured, "engine": built, "hf": fetched},
            target=target,
            meta_dir=out / "repo",
            log_dir=logs,
        )
    )


def build_graph(target: toolchain.Target, models_dir: Path = MODELS) -> Graph:
    graph = Graph(target, load_models(models_dir))
    for spec in graph.specs:
        encoder_stages(graph, spec)
    return graph


def note_pending_blocks(graph: Graph) -> None:
    """Say out loud which written blocks no stage consumes yet (they are validated, not ignored)."""
    for spec in graph.specs:
        if "bench" in spec.written:
            log.warning("%s: bench: validated; no bench stage exists yet, so nothing runs it", spec.file)


def build_groups(graph: Graph) -> Iterator[dict[str, Any]]:
    """``build:<model>``: every stage of one model (``doit build`` runs all models)."""
    for spec in graph.specs:
        yield {
            "name": spec.name,
            "doc": f"all stages of {spec.name} ({spec.file})",
            "actions": None,
            "task_dep": [graph.last_stage(spec.name).task_name],
        }
