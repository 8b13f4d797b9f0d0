"""The pinned GPU toolchain, from ``docker/versions.env``.

One file pins the Triton image tag and the TensorRT-LLM and TensorRT versions that image ships;
``docker/run.sh`` builds the images from it, and the flag tables that validate trtllm-build and
trtexec arguments on machines without those tools are chosen by the same versions.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from tasks.core.errors import UserError

VERSIONS_FILE = Path(__file__).resolve().parents[2] / "docker" / "versions.env"
KEYS = ("TRITON_TAG", "TRTLLM_VERSION", "TENSORRT_VERSION")


def parse(text: str, shown: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (comments and blank lines skipped); every key of KEYS must be there."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(shown, f"line {number}: expected KEY=VALUE, got {raw!r}")
        values[key.strip()] = value.strip()
    missing = [k for k in KEYS if k not in values]
    if missing:
        raise UserError(shown, f"missing {', '.join(missing)}")
    return values


@cache
def pinned() -> dict[str, str]:
    try:
        text = VERSIONS_FILE.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(str(VERSIONS_FILE), f"cannot read the pinned toolchain versions ({exc.strerror}); run from a checkout") from None
    return parse(text, str(VERSIONS_FILE))


def trtllm() -> str:
    """TensorRT-LLM version of the pinned image, e.g. ``1.2.1``."""
    return pinned()["TRTLLM_VERSION"]


def tensorrt_minor() -> str:
    """TensorRT major.minor of the pinned image (the trtexec flag table's key), e.g. ``10.14``."""
    return ".".join(pinned()["TENSORRT_VERSION"].split(".")[:2])
