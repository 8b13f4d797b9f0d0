"""bench: start Triton on ``repos/<model>``, measure each ``bench.concurrency`` level, write the results.

Outputs are ``<variant>.csv`` (perf_analyzer's columns, plus genai-perf's metrics for LLMs),
``<variant>.json`` (the same numbers with the run's facts) and ``<variant>.png``, published in
``build/<model>/bench/`` and copied to ``results/<model>/``.  The run itself lives in
``tasks.bench.benchrun``: it imports grpc, numpy and transformers, which listing tasks must not pay for.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.stage import StageContext
from tasks.spec import sweep

CODE_VERSION = "1"
RESULTS = Path("results")
# The cpu target's server and models: the numbers depend on these versions.
CPU_TOOLCHAIN = ("nvidia-pytriton", "tritonclient", "torch", "transformers", "onnxruntime")
SUFFIXES = ("csv", "json", "png")


def output_files(variant: str) -> dict[str, Path]:
    """Output file name -> its copy under ``results/<model>/`` (a variant is ``<model>`` or ``<model>@...``)."""
    model = sweep.base_name(variant)
    return {f"{variant}.{suffix}": RESULTS / model / f"{variant}.{suffix}" for suffix in SUFFIXES}


def action(ctx: StageContext) -> None:
    from tasks.bench import benchrun  # noqa: PLC0415 - heavy imports, only when a benchmark runs

    benchrun.run(ctx)
