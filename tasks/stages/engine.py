"""engine: the ONNX encoder built for the target.

trt: ``trtexec`` builds ``model.plan`` with min/opt/max shapes from ``engine:`` and the
export's signature (batch, and sequence for text; an image's 3 x H x W is fixed), with a
persistent timing cache beside the stage (see ``timing_cache``).
cpu: onnxruntime's offline graph optimisation writes ``model.onnx``; its bytes do not
depend on the batch or sequence limits, so editing those re-runs this stage and stops
there (early cut-off).
"""

from __future__ import annotations

import importlib
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from tasks.console import logs, progress
from tasks.core import diskfull, fsops, interrupts, worker
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext
from tasks.families import encoders
from tasks.spec import sweep
from tasks.spec.sources import calibration_file
from tasks.stages.graph import ModelGraph, rel, stage_owner
from tasks.tools import toolchain, trtexec

log = logging.getLogger(__name__)

CODE_VERSION = "2"
CPU_TOOLCHAIN = ("onnxruntime",)
_TRT_ONLY = ("opt_batch_size", "opt_seq_len", "precision", "calibration_cache", "workspace_mb", "flags", "extra_args")
_TAIL = 20
TIMING_CACHE_DIR = "timing-cache"


def shape_spec(signature: encoders.Signature, batch: int, seq: int) -> str:
    """``name:BxD1x...`` for every input, with the dynamic sequence set to ``seq``."""
    return ",".join(t.name + ":" + "x".join(str(d) for d in (batch, *(seq if d == -1 else d for d in t.dims))) for t in signature.inputs)


def trtexec_argv(
    binary: Path, onnx: Path, plan: Path, engine: Mapping[str, Any], *, table: trtexec.FlagTable, signature: encoders.Signature
) -> list[str]:
    """The full trtexec command for one encoder plan (without the timing cache)."""
    seq_max, seq_opt = engine.get("max_seq_len", 1), engine.get("opt_seq_len", 1)
    argv = [
        str(binary),
        f"--onnx={onnx}",
        f"--saveEngine={plan}",
        "--skipInference",
        f"--minShapes={shape_spec(signature, 1, 1)}",
        f"--optShapes={shape_spec(signature, engine['opt_batch_size'], seq_opt)}",
        f"--maxShapes={shape_spec(signature, engine['max_batch_size'], seq_max)}",
    ]
    if engine["precision"] != "fp32":
        argv.append(f"--{engine['precision']}")
        note = trtexec.precision_note(engine["precision"], table)
        if note:
            log.info("engine.precision %s: %s", engine["precision"], note)
    if engine["calibration_cache"] is not None:
        argv.append(f"--calib={engine['calibration_cache']}")
    if engine["workspace_mb"] is not None:
        argv.append(f"--memPoolSize=workspace:{engine['workspace_mb']}M")
    return argv + trtexec.flag_args(engine["flags"], table) + list(engine["extra_args"])


def _tail(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-_TAIL:]
    return "\n".join("    " + line for line in lines)


def run_tool(argv: list[str], log_path: Path, what: str) -> None:
    """Run a build tool with its output in ``log_path``; failure shows the last lines."""
    log.info("%s: %s (log: %s)", what, " ".join(argv), log_path)
    with log_path.open("w", encoding="utf-8") as sink, progress.watch(f"{what}: {Path(argv[0]).name}", progress.log_tail(log_path)):
        try:
            code = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, check=False).returncode
        except OSError as exc:
            raise UserError(what, f"cannot run {argv[0]}: {exc.strerror}") from None
    if code != 0:
        raise UserError(what, f"{Path(argv[0]).name} exited with status {code}; last lines of {log_path}:\n{_tail(log_path)}")


def timing_cache_path(stage_out: Path, tools: Mapping[str, str]) -> Path:
    """One cache per TensorRT version and GPU: a cache from another one is of no use to TensorRT.

    It sits under the model, not the variant (``build/<m>/``, not ``build/<m>@.../``): every
    variant of a sweep builds the same layers, and each build makes the next one faster.
    """
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(tools[k] for k in ("tensorrt", "gpu", "compute_capability"))).strip("-")
    owner = stage_out.parents[1]  # build/<owner>/engine/<target>
    return owner.with_name(sweep.base_name(owner.name)) / TIMING_CACHE_DIR / f"{slug}.cache"


@contextmanager
def timing_cache(path: Path, record: dict[str, Any], work: Path | None = None) -> Iterator[Path]:
    """A private copy of the persistent cache for the build tool; kept only if the build succeeds.

    The cache is neither an input nor a param of any stage: it only makes TensorRT's
    tactic search faster, so it may be deleted or grow without making anything outdated.
    ``work`` names the copy where its path must not change between runs (trtllm-build
    writes it into the engine's config.json); the project lock keeps it private.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fsops.remove_stale_tmp(path)  # a copy left by a killed run
    work = work or fsops.tmp_sibling(path)
    existed = path.is_file()
    if existed:
        shutil.copyfile(path, work)
    record["timing_cache"] = {"path": str(path), "reused": existed, "bytes_before": path.stat().st_size if existed else 0}
    try:
        yield work
        if work.is_file():
            work.replace(path)
            record["timing_cache"]["bytes_after"] = path.stat().st_size
    finally:
        work.unlink(missing_ok=True)


def build_trt(ctx: StageContext) -> None:
    binary = toolchain.find_trtexec()
    if binary is None:
        raise UserError(ctx.stage.task_name, "trtexec not found on PATH (target trt); run inside the TensorRT image or use target=cpu")
    table = trtexec.installed_table(binary)
    if table.version == "unknown" or not table.flags:
        raise UserError(ctx.stage.task_name, f"cannot read the TensorRT version from {binary} --help")
    engine = ctx.params["engine"]
    if engine["extra_args"]:
        log.warning("engine: passing engine.extra_args unchecked: %s", " ".join(engine["extra_args"]))
    plan = ctx.out / "model.plan"
    signature = encoders.read_signature(ctx.inputs["onnx"])
    argv = trtexec_argv(binary, ctx.inputs["onnx"] / "model.onnx", plan, engine, table=table, signature=signature)
    cached = timing_cache(timing_cache_path(ctx.stage.out_dir, ctx.params["toolchain"]), ctx.record) if engine["timing_cache"] else None
    with cached or nullcontext() as cache:
        if cache is not None:
            argv.append(f"--timingCacheFile={cache}")
        run_tool(argv, ctx.log_path("engine-trtexec"), ctx.stage.task_name)
        if not plan.is_file():  # inside: a build without a plan must not update the timing cache
            raise UserError(ctx.stage.task_name, f"trtexec succeeded but wrote no {plan.name}")
    ctx.record.update({"argv": argv, "tensorrt": table.version, "flag_table": table.source})


def build_cpu(ctx: StageContext) -> None:
    """The cpu engine: onnxruntime's offline optimisation; it runs in a worker process (``action``), where its peak ends with it."""
    interrupts.import_held("onnxruntime")  # heavy; only this action needs it
    import onnxruntime as ort  # noqa: PLC0415

    unread = ctx.stage.unread.get("engine", {})
    unused = [k for k in _TRT_ONLY if unread.get(k) not in (None, [], {}, "fp32")]
    if unused:
        log.info("engine: target cpu runs fp32 onnxruntime; engine.%s apply to target trt only", ", engine.".join(unused))
    source, target = ctx.inputs["onnx"] / "model.onnx", ctx.out / "model.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors derive from Exception alone
        raise _ort_failure(exc, source, target, ctx.stage.task_name) from None
    ctx.record["onnxruntime_level"] = "extended"


def _ort_failure(exc: Exception, source: Path, target: Path, where: str) -> UserError:
    """One line for an onnxruntime failure; a failed write of the optimised model is checked for a full disk."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    # onnxruntime loses the errno of a failed write and says INVALID_PROTOBUF; writing as much again tells.
    size = source.stat().st_size if source.is_file() else 0
    if diskfull.disk_full(exc) or ("serializ" in first.lower() and diskfull.cannot_write(target, size)):
        return UserError(where, diskfull.message(target, target))
    return UserError(where, f"onnxruntime cannot optimise {source} into {target}: {first}")


def action(ctx: StageContext) -> None:
    if ctx.params["target"] == "trt":
        build_trt(ctx)
    else:
        worker.run(ctx, __name__)


def tools_of(target: str) -> dict[str, str]:
    """What an encoder engine depends on besides its params: TensorRT and the GPU, or onnxruntime."""
    return trtexec.trt_fingerprint() if target == "trt" else toolchain.package_versions(*CPU_TOOLCHAIN)


def stage(model: ModelGraph, exported: Stage) -> Stage:
    """``engine:<m>`` of an encoder reads the engine block, the target, its toolchain and the calibration cache."""
    spec, target = model.spec, model.target
    engine_block = dict(spec.block("engine"))
    calibration = calibration_file(spec) if target == "trt" else None
    # The cache's content is an input (files); the param is its path as trtexec gets it.
    engine_block["calibration_cache"] = rel(calibration).as_posix() if calibration else None
    read, unread = split_read(engine_block, target)
    params = {"engine": read, "target": target, "toolchain": tools_of(target), "code": CODE_VERSION}
    return model.stage(
        "engine", params, action, f"{target} engine of {stage_owner(spec, 'engine')}", deps={"onnx": exported}, target=target,
        files=[rel(calibration)] if calibration else [], cached=True, fingerprint=trtexec.trt_fingerprint if target == "trt" else None,
        unread={"engine": unread} if unread else {},
    )  # fmt: skip


def split_read(engine_block: Mapping[str, Any], target: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keys the target's build reads, the rest): onnxruntime on cpu reads none of trtexec's settings.

    The cpu engine keeps the batch and sequence limits: its bytes do not depend on them, but a limit
    edit re-runs it and stops there (the early cut-off the project relies on elsewhere).
    """
    ignored = set(_TRT_ONLY) | {"timing_cache"} if target == "cpu" else set()
    read = {k: v for k, v in engine_block.items() if k not in ignored}
    return read, {k: v for k, v in engine_block.items() if k in ignored}


if __name__ == "__main__":  # the worker process of ``action``
    # Run as __main__, this file's loggers sit outside "tasks": serve the module loaded under its own name.
    worker.serve(importlib.import_module("tasks.stages.engine").build_cpu, logs.configure)
