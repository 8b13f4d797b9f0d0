"""Whether a repository's engines were built by this machine's TensorRT, TensorRT-LLM and GPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tasks.core import fsops
from tasks.tools import toolchain
from tasks.triton.argv import ServerError

# The fingerprint keys an engine cannot run without, as the repository's toolchain.json records them.
_ENGINE_KEYS = {"tensorrt_llm": "TensorRT-LLM", "tensorrt": "TensorRT", "gpu": "GPU", "compute_capability": "compute capability"}
_UNKNOWN = ("", "none", "unknown", "not installed")


def _release(value: str) -> str:
    # trtexec reports 10.14.1, the package 10.14.1.48, a local build 1.2.1+cu13: compare what both sides know.
    return ".".join(value.split("+", maxsplit=1)[0].split(".")[:3])


def known_first(*fingerprints: dict[str, str]) -> dict[str, str]:
    """The fingerprints merged, a known value never replaced by an unknown one.

    The plan image has trtexec but no TensorRT python package: its "not installed" must not
    hide the version trtexec reports (and with it the check of every plan engine).
    """
    merged: dict[str, str] = {}
    for fingerprint in fingerprints:
        for key, value in fingerprint.items():
            if key not in merged or str(merged[key]).lower() in _UNKNOWN:
                merged[key] = value
    return merged


def running_toolchain() -> dict[str, str]:
    """TensorRT, TensorRT-LLM and GPU of this machine, as the engine stages fingerprint them."""
    from tasks.tools import trtexec, trtllm  # noqa: PLC0415 - only a trt server start needs them

    return known_first(trtexec.trt_fingerprint(), trtllm.trt_fingerprint())


def toolchain_mismatch(built: dict[str, str], running: dict[str, str]) -> list[str]:
    """``key: built -> running`` for every engine key both sides know and that differs."""
    changes = []
    for key, label in _ENGINE_KEYS.items():
        was, now = str(built.get(key, "")), str(running.get(key, ""))
        if was.lower() in _UNKNOWN or now.lower() in _UNKNOWN:
            continue
        same = _release(was) == _release(now) if key.startswith("tensorrt") else was == now
        if not same:
            changes.append(f"{label} {was} (built) vs {now} (here)")
    return changes


def check_repository_toolchain(repo: Path, running: Callable[[], dict[str, str]] | None = None) -> None:
    """Refuse engines built by another TensorRT / TensorRT-LLM or on another GPU: the server would fail to load them."""
    data = fsops.read_json(repo / toolchain.REPOSITORY_FILE)
    if not isinstance(data, dict):
        return
    here = (running or running_toolchain)()
    for model, built in sorted(data.get("engines", {}).items()):
        changes = toolchain_mismatch(built, here)
        if changes:
            msg = f"{repo}: the engines of {model} were built for another toolchain: {'; '.join(changes)}"
            msg += f"; rebuild them here (doit build:{model} target=trt)"
            raise ServerError(msg)
