"""The GPU conformance kit: the trt target checked against the cpu target and NVIDIA's own converter."""

from __future__ import annotations

from typing import Any

from tasks.core.lazy import LazyFunction


def task(target: str, models: str, examples: str | None) -> dict[str, Any]:
    """The doit task: always runs (it measures the toolchain, not files).

    The kit (Triton clients, converters) is imported only when the task runs, not by every ``doit list``.
    """
    return {
        "actions": [(LazyFunction("tasks.commands.conformance.kit", "action"), [target, models, examples])],
        "uptodate": [False],
        "verbosity": 2,
        "doc": "tiny T5, GPT-2, Llama, Gemma, BERT, CLIP built on trt and cpu, answers compared -> results/conformance/",
    }
