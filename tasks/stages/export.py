"""export: an encoder checkpoint -> ONNX with a dynamic batch (and sequence), checked against PyTorch.

What goes in and out depends on the family (``tasks.families.encoders``): token tensors in INT32
(TensorRT and Triton's tokenizer model both speak INT32) or ``pixel_values``; the pooled,
projected embedding out, so pooling and normalisation run inside the engine on both targets.
The signature is written beside the model (``signature.json``) for the engine stage's shapes.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.console import logs
from tasks.core import diskfull, fsops, interrupts, worker
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext
from tasks.families import checkpoint, encoders
from tasks.families.converters import read_checkpoint_config
from tasks.stages import fetch
from tasks.stages.graph import ModelGraph
from tasks.tools import toolchain

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

CODE_VERSION = "2"
TOOLCHAIN = ("torch", "transformers", "onnx", "onnxscript")
TOLERANCE = 1e-4


def _dynamic_shapes(signature: encoders.Signature) -> dict[str, dict[int, Any]]:
    import torch  # noqa: PLC0415 - heavy; only the export action needs it

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    shapes: dict[str, dict[int, Any]] = {}
    for tensor in signature.inputs:
        shapes[tensor.name] = {0: batch} | {i + 1: seq for i, d in enumerate(tensor.dims) if d == -1}
    return shapes


def _export(module: torch.nn.Module, path: Path, opset: int, signature: encoders.Signature, example: encoders.Feeds) -> None:
    import torch  # noqa: PLC0415

    torch.onnx.export(
        module,
        tuple(torch.from_numpy(example[t.name]) for t in signature.inputs),
        str(path),
        dynamo=True,
        external_data=False,
        opset_version=opset,
        input_names=[t.name for t in signature.inputs],
        output_names=[t.name for t in signature.outputs],
        dynamic_shapes=_dynamic_shapes(signature),
    )


def compare(module: torch.nn.Module, path: Path, signature: encoders.Signature, samples: list[encoders.Feeds], where: str) -> float:
    """Largest |ONNX Runtime - PyTorch| over batches of different shapes."""
    import onnxruntime as ort  # noqa: PLC0415
    import torch  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a fixed reduction order: the same bytes give the same diff
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [t.name for t in signature.outputs]
    worst = 0.0
    for feeds in samples:
        with torch.no_grad():
            expected = module(*(torch.from_numpy(feeds[t.name]) for t in signature.inputs))
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(names, feeds)
        for name, want, have in zip(names, expected, got, strict=True):
            worst = max(worst, largest_diff(f"{path}: output {name}", want.numpy(), have, where))
    return worst


def largest_diff(name: str, want: np.ndarray[Any, Any], have: np.ndarray[Any, Any], where: str) -> float:
    """The largest |have - want| of one output; an output that is not finite is refused, not compared.

    NaN compares false with everything, so a NaN difference would pass any ``diff > tolerance`` test.
    """
    import numpy as np  # noqa: PLC0415

    for side, values in (("PyTorch", want), ("ONNX Runtime", have)):
        if not np.isfinite(values).all():
            kind = "NaN" if np.isnan(values).any() else "Inf"
            raise UserError(where, f"{name} holds {kind} under {side} (weights or inputs out of range); nothing is exported")
    return float(np.abs(want - have).max(initial=0.0))


def _run(ctx: StageContext, family: encoders.Family, settings: Mapping[str, Any], log_path: Path) -> float:
    interrupts.import_held("torch", "transformers", "onnx", "onnxruntime")
    import onnx  # noqa: PLC0415

    source, out = ctx.inputs["hf"], ctx.out / "model.onnx"
    config = read_checkpoint_config(source, ctx.stage.task_name)
    checkpoint.check_family(config, family.name, source / "config.json", ctx.stage.task_name)
    signature = family.signature(config)
    module = family.wrapper(source, settings)
    try:
        _export(module, out, settings["opset"], signature, family.samples(signature, config, 0))
    except Exception as exc:
        if diskfull.disk_full(exc):
            raise  # the stage runner names the file and the free space
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(ctx.stage.task_name, f"ONNX export failed: {first} (full log: {log_path})") from exc
    onnx.checker.check_model(str(out))
    fsops.write_json_atomic(ctx.out / encoders.SIGNATURE_FILE, signature.to_json())
    return compare(module, out, signature, [family.samples(signature, config, seed) for seed in (1, 2)], ctx.stage.task_name)


def build(ctx: StageContext) -> None:
    """The export itself; it runs in a worker process (``action``), where torch's peak ends with it."""
    settings = ctx.params["export"]
    family = encoders.family(ctx.params["family"])
    log_path = ctx.log_path("export")
    log.info("export: %s (%s) -> ONNX opset %d (log: %s)", ctx.inputs["hf"], family.name, settings["opset"], log_path)
    log_path.unlink(missing_ok=True)
    with logs.output_to(log_path):
        diff = _run(ctx, family, settings, log_path)
    ctx.record["max_abs_diff_vs_pytorch"] = diff
    log.info("export: max |onnxruntime - pytorch| = %.2e", diff)
    if not diff <= TOLERANCE:
        raise UserError(ctx.stage.task_name, f"ONNX output differs from PyTorch by {diff:.2e} (> {TOLERANCE:g})")


def action(ctx: StageContext) -> None:
    worker.run(ctx, __name__)


def stage(model: ModelGraph, fetched: Stage) -> Stage:
    """``export:<m>`` reads the export block, the family and the exporting packages' versions."""
    spec = model.spec
    params = {
        "export": spec.block("export"),
        "family": spec.family,
        "toolchain": toolchain.package_versions(*TOOLCHAIN),
        "code": CODE_VERSION,
    }
    # The exporter loads the config and the weights: a tokenizer edit does not re-export.
    deps = {"hf": fetched.only(fetch.MODEL)}
    return model.stage("export", params, action, f"ONNX export of {spec.name}", deps=deps, cached=True)


if __name__ == "__main__":  # the worker process of ``action``
    # Run as __main__, this file's loggers sit outside "tasks": serve the module loaded under its own name.
    worker.serve(importlib.import_module("tasks.stages.export").build, logs.configure)
