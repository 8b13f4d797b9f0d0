"""engine: the ONNX encoder built for the target.

trt: ``trtexec`` builds ``model.plan`` with min/opt/max shapes from ``engine:``.
cpu: onnxruntime's offline graph optimisation writes ``model.onnx``; its bytes do
not depend on the batch or sequence limits, so editing those re-runs this stage
and stops there (early cut-off).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks import toolchain, trtexec
from tasks.errors import UserError
from tasks.export import INPUTS
from tasks.stage import StageContext

log = logging.getLogger(__name__)

CODE_VERSION = "1"
CPU_TOOLCHAIN = ("onnxruntime",)
_TRT_ONLY = ("opt_batch_size", "opt_seq_len", "precision", "workspace_mb", "flags", "extra_args")
_TAIL = 20


def trt_fingerprint() -> dict[str, str]:
    """TensorRT version (from the installed trtexec) and GPU: a plan runs only where both match."""
    binary = toolchain.find_trtexec()
    version = trtexec.installed_table(binary).version if binary else toolchain.package_version("tensorrt")
    return {"tensorrt": version, **toolchain.gpu()}


def trtexec_argv(binary: Path, onnx: Path, plan: Path, engine: Mapping[str, Any], table: trtexec.FlagTable) -> list[str]:
    """The full trtexec command for one encoder plan."""
    argv = [
        str(binary),
        f"--onnx={onnx}",
        f"--saveEngine={plan}",
        "--skipInference",
        f"--minShapes={trtexec.shape_spec(INPUTS, 1, 1)}",
        f"--optShapes={trtexec.shape_spec(INPUTS, engine['opt_batch_size'], engine['opt_seq_len'])}",
        f"--maxShapes={trtexec.shape_spec(INPUTS, engine['max_batch_size'], engine['max_seq_len'])}",
    ]
    if engine["precision"] != "fp32":
        argv.append(f"--{engine['precision']}")
    if engine["workspace_mb"] is not None:
        argv.append(f"--memPoolSize=workspace:{engine['workspace_mb']}M")
    return argv + trtexec.flag_args(engine["flags"], table) + list(engine["extra_args"])


def _tail(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-_TAIL:]
    return "\n".join("    " + line for line in lines)


def run_tool(argv: list[str], log_path: Path, what: str) -> None:
    """Run a build tool with its output in ``log_path``; failure shows the last lines."""
    log.info("%s: %s (log: %s)", what, " ".join(argv), log_path)
    with log_path.open("w", encoding="utf-8") as sink:
        try:
            code = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, check=False).returncode
        except OSError as exc:
            raise UserError(what, f"cannot run {argv[0]}: {exc.strerror}") from None
    if code != 0:
        raise UserError(what, f"{Path(argv[0]).name} exited with status {code}; last lines of {log_path}:\n{_tail(log_path)}")


def build_trt(ctx: StageContext) -> None:
    binary = toolchain.find_trtexec()
    if binary is None:
        raise UserError(ctx.stage.task_name, "trtexec not found on PATH (target trt); run inside the TensorRT image or use target=cpu")
    table = trtexec.installed_table(binary)
    if table.version == "unknown" or not table.flags:
        raise UserError(ctx.stage.task_name, f"cannot read the TensorRT version from {binary} --help")
    extra = ctx.params["engine"]["extra_args"]
    if extra:
        log.warning("engine: passing engine.extra_args unchecked: %s", " ".join(extra))
    plan = ctx.out / "model.plan"
    argv = trtexec_argv(binary, ctx.inputs["onnx"] / "model.onnx", plan, ctx.params["engine"], table)
    run_tool(argv, ctx.log_path("engine-trtexec"), ctx.stage.task_name)
    if not plan.is_file():
        raise UserError(ctx.stage.task_name, f"trtexec succeeded but wrote no {plan.name}")
    ctx.record.update({"argv": argv, "tensorrt": table.version, "flag_table": table.source})


def build_cpu(ctx: StageContext) -> None:
    import onnxruntime as ort  # noqa: PLC0415 - heavy; only this action needs it

    unused = [k for k in _TRT_ONLY if ctx.params["engine"][k] not in (None, [], {}, "fp32")]
    if unused:
        log.info("engine: target cpu runs fp32 onnxruntime; engine.%s apply to target trt only", ", engine.".join(unused))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(ctx.out / "model.onnx")
    ort.InferenceSession(str(ctx.inputs["onnx"] / "model.onnx"), options, providers=["CPUExecutionProvider"])
    ctx.record["onnxruntime_level"] = "extended"


def action(ctx: StageContext) -> None:
    if ctx.params["target"] == "trt":
        build_trt(ctx)
    else:
        build_cpu(ctx)
