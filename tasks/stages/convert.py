"""convert: an HF checkpoint -> a TensorRT-LLM checkpoint (config.json + rank{r}.safetensors per component).

The family in the model YAML picks the converter module (``tasks.families.converters.FAMILIES``);
every converter streams tensor by tensor, so a multi-GB checkpoint converts in about
one tensor's worth of memory.  Throughput and peak memory go into ``action.json``.
"""

from __future__ import annotations

import importlib
import logging
import resource
import time
from pathlib import Path

from tasks.console import logs, progress
from tasks.core import worker
from tasks.core.stage import Stage, StageContext
from tasks.families import converters
from tasks.stages import fetch
from tasks.stages.graph import ModelGraph
from tasks.tools import toolchain

log = logging.getLogger(__name__)

CODE_VERSION = "1"
TOOLCHAIN = ("torch",)  # the converters read and write safetensors with their own streaming code
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_MB = 1e6


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter of this process (Linux: ``5`` > clear_refs); False if unsupported.

    The worker process has already imported torch and the converter by then; after the reset
    ``VmHWM`` is the conversion's own peak (the resident imports included).
    """
    try:
        _CLEAR_REFS.write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident memory in MB: ``VmHWM`` where /proc has it, else getrusage's lifetime maximum."""
    try:
        for line in _STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / _MB
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _MB


def build(ctx: StageContext) -> None:
    """The conversion itself; it runs in a worker process (``action``), so torch and the peak leave with it."""
    where = ctx.stage.task_name
    settings = converters.Settings.from_params(ctx.params["convert"], where)
    family = str(ctx.params["family"])
    convert = converters.converter(family, where)
    source = ctx.inputs["hf"]
    log.info("convert: %s -> TRT-LLM checkpoint (%s, %s, tp %d, pp %d)", source, family, settings.dtype, settings.tp_size, settings.pp_size)
    own_peak = reset_peak_rss()
    started = time.monotonic()
    with progress.watch(f"{where}: converting", progress.tree_size(ctx.out)):
        result = convert(source, ctx.out, settings, where)
    seconds = max(time.monotonic() - started, 1e-9)
    ctx.record["convert"] = {
        "family": family,
        "source_bytes": result.source_bytes,
        "target_bytes": result.target_bytes,
        "tensors": result.tensors,
        "files": result.files,
        "seconds": round(seconds, 3),
        "source_mb_per_s": round(result.source_bytes / _MB / seconds, 1),
        "target_mb_per_s": round(result.target_bytes / _MB / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_scope": "this stage" if own_peak else "whole process",
        "vocab_padded_to": result.vocab_padded,
    }
    log.info(
        "convert: %.0f MB -> %.0f MB in %.1f s (%.0f MB/s), peak RSS %.0f MB",
        result.source_bytes / _MB,
        result.target_bytes / _MB,
        seconds,
        result.source_bytes / _MB / seconds,
        ctx.record["convert"]["peak_rss_mb"],
    )


def action(ctx: StageContext) -> None:
    worker.run(ctx, __name__)


def stage(model: ModelGraph, fetched: Stage) -> Stage:
    """``convert:<m>`` reads the convert block, the family and the converting packages' versions."""
    spec = model.spec
    params = {
        "convert": spec.block("convert"),
        "family": spec.family,
        "toolchain": toolchain.package_versions(*TOOLCHAIN),
        "code": CODE_VERSION,
    }
    return model.stage("convert", params, action, f"TRT-LLM checkpoint of {spec.name}", deps={"hf": fetched.only(fetch.MODEL)}, cached=True)


if __name__ == "__main__":  # the worker process of ``action``
    # Run as __main__, this file's loggers sit outside "tasks": serve the module loaded under its own name.
    worker.serve(importlib.import_module("tasks.stages.convert").build, logs.configure)
