"""bench: start Triton on ``repos/<model>``, measure each ``bench.concurrency`` level, write the results.

Outputs are ``<variant>.csv`` (perf_analyzer's columns, plus genai-perf's metrics for LLMs),
``<variant>.json`` (the same numbers with the run's facts) and ``<variant>.png``, published in
``build/<model>/bench/<target>/`` and copied to ``results/<model>/<target>/``.  The run itself lives in
``tasks.bench.benchrun``: it imports grpc, numpy and transformers, which listing tasks must not pay for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tasks.bench import perfrun
from tasks.core.stage import Stage, StageContext
from tasks.spec import sweep
from tasks.spec.sources import prompts_file, server_ranks
from tasks.stages.graph import ModelGraph, rel
from tasks.tools import toolchain

CODE_VERSION = "1"
RESULTS = Path("results")
# The cpu target's server and models: the numbers depend on these versions.
CPU_TOOLCHAIN = ("nvidia-pytriton", "tritonclient", "torch", "transformers", "onnxruntime")
SUFFIXES = ("csv", "json", "png")


def output_files(variant: str, target: str) -> dict[str, Path]:
    """Output file name -> its copy under ``results/<model>/<target>/`` (a variant is ``<model>`` or ``<model>@...``).

    One folder per target: a trt benchmark never replaces the cpu one's numbers.
    """
    model = sweep.base_name(variant)
    return {f"{variant}.{suffix}": RESULTS / model / target / f"{variant}.{suffix}" for suffix in SUFFIXES}


def action(ctx: StageContext) -> None:
    from tasks.bench import benchrun  # noqa: PLC0415 - heavy imports, only when a benchmark runs

    benchrun.run(ctx)


def stage(model: ModelGraph, published: Stage, trt_tools: Mapping[str, str]) -> Stage | None:
    """``bench:<m>`` reads the bench block, the workload, the ranks and the toolchain; only models with one.

    What it measures is the repository's content (engines and configs included), its one input: an
    engine edit that leaves the engine's bytes as they were leaves the repository so, and runs no benchmark.
    The results name the engine's flags from the engine stage's record of the bytes measured.
    """
    spec = model.spec
    if "bench" not in spec.written:
        return None
    tools = trt_tools if model.target == "trt" else toolchain.package_versions(*CPU_TOOLCHAIN)
    bench = dict(spec.block("bench"))
    # Resolved here, so the tool that measured is in the params: results differ by tool.
    bench["tool"] = perfrun.resolve_tool(bench["tool"])
    params = {
        "bench": bench,
        "kind": spec.kind,
        "name": spec.name,
        "variant": spec.variant,
        "yaml": str(spec.file),
        "ranks": server_ranks(spec),
        "target": model.target,
        "toolchain": tools,
        "code": CODE_VERSION,
    }
    prompts = prompts_file(spec)
    files = [rel(prompts)] if prompts is not None else []
    doc = f"benchmark of repos/{spec.variant} -> results/{spec.name}/{model.target}/"
    return model.stage(
        "bench", params, action, doc, deps={"repo": published}, files=files, published=output_files(spec.variant, model.target)
    )
