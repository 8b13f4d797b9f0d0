"""engine (kind llm): TensorRT-LLM engines, or none on cpu.

trt: ``trtllm-build`` builds, from the converted checkpoint, ``encoder/`` and ``decoder/``
for T5 or ``engine/`` for a decoder-only family (each config.json plus rank{r}.engine),
with the settings the family requires and the user's validated flags.
cpu: no engine.  The cpu repository serves the HF checkpoint through a python-backend
stand-in of the tensorrt_llm model, so this stage only writes a small note whose bytes
never change, and no ``engine:`` key is among its params on cpu (editing one runs nothing here).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core import fsops
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext
from tasks.stages.engine import run_tool, timing_cache, timing_cache_path
from tasks.stages.graph import ModelGraph, stage_owner
from tasks.tools import toolchain, trtllm, trtllm_argv
from tasks.triton import llm_layout

log = logging.getLogger(__name__)

CODE_VERSION = "1"
CPU_ENGINE = {
    "target": "cpu",
    "engine": "none",
    "reason": "target cpu serves the HF checkpoint with a python-backend stand-in of the tensorrt_llm model",
}
DTYPES = ("float16", "bfloat16", "float32")
# Where a decoder-only family's engine goes (T5 has encoder/ and decoder/): where the repository looks for it.
DECODER_ONLY_DIR = llm_layout.DECODER_ONLY_DIRS[0]


@dataclass(frozen=True)
class Component:
    """What the engine build needs from one converted checkpoint folder (encoder/ or decoder/)."""

    name: str
    folder: Path
    dtype: str
    world_size: int
    tp_size: int
    pp_size: int


def read_component(folder: Path, where: str, name: str | None = None) -> Component:
    """The dtype and parallel mapping from ``folder/config.json``; its rank weights must all be there."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(where, f"cannot read the converted checkpoint config {folder / 'config.json'}: {exc}") from None
    dtype = config.get("dtype")
    if dtype not in DTYPES:
        raise UserError(where, f"{folder / 'config.json'}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    mapping = config.get("mapping") or {}
    tp, pp = int(mapping.get("tp_size", 1)), int(mapping.get("pp_size", 1))
    world = int(mapping.get("world_size", tp * pp))
    if world != tp * pp:
        msg = f"{folder / 'config.json'}: mapping.world_size {world} != tp_size {tp} x pp_size {pp}; convert the checkpoint again"
        raise UserError(where, msg)
    missing = [f"rank{r}.safetensors" for r in range(world) if not (folder / f"rank{r}.safetensors").is_file()]
    if missing:
        raise UserError(where, f"{folder} lacks {', '.join(missing)} for world size {world}; convert the checkpoint again")
    return Component(name or folder.name, folder, dtype, world, tp, pp)


def check_gpus(parts: list[Component], where: str) -> None:
    """An engine of world size N runs on N GPUs; fail before building one this machine cannot run."""
    available = toolchain.gpu_count()
    needed = max(part.world_size for part in parts)
    if available is not None and needed > available:
        part = next(p for p in parts if p.world_size == needed)
        shape = f"tp_size {part.tp_size} x pp_size {part.pp_size}"
        msg = f"the {part.name} checkpoint has world size {needed} ({shape}) but nvidia-smi lists {available} GPU(s)"
        raise UserError(where, msg)


def engine_version(out: Path, part: Component, where: str) -> str:
    """The TensorRT-LLM version in the engine's config.json, once every rank engine is there."""
    missing = [name for name in ["config.json", *(f"rank{r}.engine" for r in range(part.world_size))] if not (out / name).is_file()]
    if missing:
        raise UserError(where, f"trtllm-build succeeded but {out} lacks {', '.join(missing)}")
    config = fsops.read_json(out / "config.json")
    version = config.get("version") if isinstance(config, dict) else None
    if not isinstance(version, str):
        raise UserError(where, f"{out / 'config.json'} has no engine version; it was not written by trtllm-build 0.12 or newer")
    return version


def _parts(ctx: StageContext, family: str, where: str) -> list[Component]:
    checkpoint = ctx.inputs["checkpoint"]
    if family == "t5":
        return [read_component(checkpoint / name, where) for name in trtllm_argv.COMPONENTS]
    return [read_component(checkpoint, where, DECODER_ONLY_DIR)]


def _argv(ctx: StageContext, family: str, part: Component, binary: Path, table: trtllm.FlagTable, *, cache: Path) -> list[str]:
    engine = ctx.params["engine"]
    out = ctx.out / part.name
    if family == "t5":
        return trtllm_argv.t5_argv(
            binary, part.name, part.folder, out, engine, part.dtype, table, workers=part.world_size, timing_cache=cache
        )
    return trtllm_argv.decoder_argv(
        binary, family, part.folder, out, engine, part.dtype, table, workers=part.world_size, timing_cache=cache
    )


def build_trt(ctx: StageContext) -> None:
    where = ctx.stage.task_name
    binary = toolchain.find_trtllm_build()
    if binary is None:
        msg = "trtllm-build not found on PATH (target trt); run inside the pinned Triton TRT-LLM image or use target=cpu"
        raise UserError(where, msg)
    engine, family = ctx.params["engine"], ctx.params.get("family", "t5")
    parts = _parts(ctx, family, where)
    check_gpus(parts, where)
    table = trtllm.installed_table(binary)
    if table.version in ("unknown", "not installed"):
        raise UserError(where, f"cannot read the TensorRT-LLM version (no tensorrt_llm package metadata, no version in {binary} --help)")
    # trtllm-build builds every rank of the checkpoint itself, one process per worker and GPU;
    # it is not wrapped in mpirun (serving is where mpirun belongs: one rank per process).
    # Every argv is checked before the first build: a bad decoder flag must not cost an encoder build.
    private = {part.name: ctx.log_path(f"engine-{part.name}").with_suffix(".timing-cache") for part in parts}
    argvs = {part.name: _argv(ctx, family, part, binary, table, cache=private[part.name]) for part in parts}
    if engine["extra_args"]:
        log.warning("engine: passing engine.extra_args to trtllm-build unchecked: %s", " ".join(engine["extra_args"]))
    caches: dict[str, dict[str, Any]] = {}
    # One persistent cache per component, TensorRT and GPU, shared by every variant of a sweep
    # (tasks.stages.engine.timing_cache: it never makes a build outdated).  The private copy has a
    # stable path because trtllm-build records it in the engine's config.json.
    shared = timing_cache_path(ctx.stage.out_dir, ctx.params["toolchain"])
    for part in parts:
        facts: dict[str, Any] = {}
        with timing_cache(shared.with_name(f"{shared.stem}-{part.name}.cache"), facts, private[part.name]):
            run_tool(argvs[part.name], ctx.log_path(f"engine-{part.name}"), where)
        caches[part.name] = facts["timing_cache"]
        built = engine_version(ctx.out / part.name, part, where)
        # A local build tag ("1.2.1+cu13") in the package metadata is not part of tensorrt_llm.__version__.
        if built.split("+")[0] != table.version.split("+")[0]:
            msg = f"the {part.name} engine was built by TensorRT-LLM {built} but TensorRT-LLM {table.version} is installed"
            raise UserError(where, f"{msg}; {binary} belongs to another installation")
    ctx.record.update({"trtllm_version": table.version, "argv": argvs, "flag_table": table.source, "timing_cache": caches})
    ctx.record["world_size"] = {part.name: part.world_size for part in parts}


def build_cpu(ctx: StageContext) -> None:
    fsops.write_json_atomic(ctx.out / "engine.json", CPU_ENGINE)
    log.info("engine: target cpu builds no TensorRT-LLM engine; the HF checkpoint is served by a python-backend stand-in")


def action(ctx: StageContext) -> None:
    if ctx.params["target"] == "trt":
        build_trt(ctx)
    else:
        build_cpu(ctx)


def stage(model: ModelGraph, converted: Stage) -> Stage:
    """``engine:<m>`` of an LLM reads the engine block, the family, the target and TensorRT-LLM's toolchain."""
    spec, target = model.spec, model.target
    tools = trtllm.trt_fingerprint() if target == "trt" else {}
    # On cpu the stage writes a fixed note: no engine key changes it (the config stage reads the limits it needs).
    engine = spec.block("engine") if target == "trt" else {}
    params = {"engine": engine, "family": spec.family, "target": target, "toolchain": tools, "code": CODE_VERSION}
    return model.stage(
        "engine", params, action, f"{target} engines of {stage_owner(spec, 'engine')}", deps={"checkpoint": converted}, target=target,
        cached=True, fingerprint=trtllm.trt_fingerprint if target == "trt" else None,
        unread={} if target == "trt" else {"engine": spec.block("engine")},
    )  # fmt: skip
