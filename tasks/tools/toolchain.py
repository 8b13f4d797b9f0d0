"""Which target a run builds for, and the tool versions each stage's output depends on.

Versions come from package metadata (no imports: importing torch costs seconds on
every ``doit list``).  A stage lists the items it depends on; only those enter its
params, so a torch upgrade re-exports ONNX but never re-fetches a checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tasks.core import fsops, observe
from tasks.core.errors import UserError, shown

log = logging.getLogger(__name__)

TARGETS = ("auto", "cpu", "trt")
# Where NGC images and TensorRT tarballs put trtexec when it is not on PATH.
_TRTEXEC_DIRS = ("/usr/src/tensorrt/bin", "/usr/local/tensorrt/bin", "/opt/tensorrt/bin")


@dataclass(frozen=True)
class Target:
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def which(name: str) -> Path | None:
    """``shutil.which``, with the folders searched recorded: a tool installed later must change a graph snapshot."""
    observe.note(*(d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d))
    found = shutil.which(name)
    if found:
        observe.note(found)
    return Path(found) if found else None


def find_trtexec() -> Path | None:
    found = which("trtexec")
    if found:
        return found
    observe.note(*_TRTEXEC_DIRS)
    for folder in _TRTEXEC_DIRS:
        candidate = Path(folder) / "trtexec"
        if candidate.is_file():
            observe.note(candidate)
            return candidate
    return None


def find_trtllm_build() -> Path | None:
    return which("trtllm-build")


def resolve_target(requested: str) -> Target:
    """``auto`` becomes ``trt`` when a GPU build tool is installed, else ``cpu``."""
    if requested not in TARGETS:
        raise UserError("target", f"expected one of {', '.join(TARGETS)}, got {shown(requested)}")
    if requested != "auto":
        return Target(requested, "requested on the command line")
    tool = find_trtexec() or find_trtllm_build()
    if tool is not None:
        return Target("trt", f"auto: found {tool}")
    return Target("cpu", "auto: no trtexec or trtllm-build found")


@cache
def package_version(dist: str) -> str:
    """Installed version of ``dist``; read once per process (parsing METADATA costs ms, and every model asks)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def package_versions(*dists: str) -> dict[str, str]:
    return {dist: package_version(dist) for dist in dists}


# The NVIDIA driver's view of the machine, without running anything: its version and each GPU's model.
_DRIVER = Path("/proc/driver/nvidia")
GPU_CACHE = Path("build/.cache/gpu.json")


def driver_fingerprint(root: Path | None = None) -> str:
    """Driver version and every GPU's ``information`` file: what changes when the GPU or driver does."""
    root = root or _DRIVER
    try:
        parts = [(root / "version").read_text(encoding="utf-8", errors="replace")]
        parts += [p.read_text(encoding="utf-8", errors="replace") for p in sorted(root.glob("gpus/*/information"))]
    except OSError:
        return "none"
    return "\n".join(parts)


@cache
def gpu() -> dict[str, str]:
    """Name and compute capability of GPU 0 from nvidia-smi; engines are built for exactly these.

    nvidia-smi takes a noticeable part of a second: its answer is kept per driver fingerprint.
    """
    fingerprint = driver_fingerprint()
    saved = fsops.read_json(GPU_CACHE) if fingerprint != "none" else None
    if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint and isinstance(saved.get("gpu"), dict):
        return {str(k): str(v) for k, v in saved["gpu"].items()}
    found = _query_gpu()
    if fingerprint != "none" and "unknown" not in found.values():
        fsops.write_json_atomic(GPU_CACHE, {"fingerprint": fingerprint, "gpu": found})
    return found


def _query_gpu() -> dict[str, str]:
    smi = which("nvidia-smi")
    if smi is None:
        return {"gpu": "none", "compute_capability": "none"}
    argv = [str(smi), "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s); GPU recorded as unknown", exc)
        return {"gpu": "unknown", "compute_capability": "unknown"}
    name, _, cap = out.splitlines()[0].partition(",") if out.strip() else ("unknown", "", "unknown")
    return {"gpu": name.strip(), "compute_capability": cap.strip()}


# At a repository's root (Triton ignores files there): what built its engines; the launcher checks it.
REPOSITORY_FILE = "toolchain.json"


def container() -> dict[str, str]:
    """The NGC Triton container's release (``26.05``) from the variable its images set; ``none`` outside one."""
    return {"container": os.environ.get("NVIDIA_TRITON_SERVER_VERSION", "none")}


def gpu_count() -> int | None:
    """GPUs nvidia-smi lists, or None when it is missing or fails (no check then)."""
    smi = which("nvidia-smi")
    if smi is None:
        return None
    argv = [str(smi), "--query-gpu=index", "--format=csv,noheader"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s); not checking the GPU count", exc)
        return None
    return sum(1 for line in out.splitlines() if line.strip())
