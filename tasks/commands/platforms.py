"""What a GPU builder's toolchain looks like, recorded in the store so a CPU machine can plan for it.

Action keys of GPU stages hash the builder's toolchain (TensorRT, TensorRT-LLM, GPU, container,
and the package versions of its image).  A CPU machine cannot measure those, so each GPU job
records them once per image (``doit platform``) under ``platforms/<platform>/<toolchain id>/<image>.json``;
``doit plan platform=...`` computes keys with that record instead of its own machine.  The
toolchain id names the pinned image inputs (CI uses a hash of docker/versions.env, the Dockerfile and
pyproject.toml), so a new pin finds no record and plans a full build instead of trusting an old one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from doit.exceptions import TaskFailed

from tasks.core import cache
from tasks.core.errors import UserError
from tasks.core.store import Store, StoreError
from tasks.tools import toolchain

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Which pinned image (docker/run.sh --image) builds a model of each kind.
IMAGE_OF_KIND = {"llm": "trtllm"}
DEFAULT_IMAGE = "plan"

Record = dict[str, Any]


def image_of(kind: str) -> str:
    return IMAGE_OF_KIND.get(kind, DEFAULT_IMAGE)


def check_name(variable: str, value: str) -> str:
    """A platform name, toolchain id or image becomes part of a store key: plain words only."""
    if not _NAME.fullmatch(value):
        raise UserError(variable, f"expected letters, digits, '.', '_' or '-', got {value!r}")
    return value


def record_key(platform: str, toolchain_id: str, image: str) -> str:
    return f"platforms/{platform}/{toolchain_id}/{image}.json"


def live_record() -> Record:
    """The toolchain of this machine as the graph puts it into stage params (a tool that is absent is left out)."""
    # Imported here: every doit invocation imports this module, few record a platform.
    from tasks.stages import bench, convert, engine, export  # noqa: PLC0415
    from tasks.tools import trtexec, trtllm  # noqa: PLC0415

    dists = sorted({*export.TOOLCHAIN, *convert.TOOLCHAIN, *engine.CPU_TOOLCHAIN, *bench.CPU_TOOLCHAIN})
    found: Record = {"packages": toolchain.package_versions(*dists)}
    if toolchain.find_trtexec() is not None:
        found["engine"] = trtexec.trt_fingerprint()
    if toolchain.find_trtllm_build() is not None:
        found["llm"] = trtllm.trt_fingerprint()
    return found


def save(store: Store, key: str, record: Record) -> None:
    """Overwrite: the latest builder of a platform is the truth about it."""
    store.put_bytes(key, json.dumps(record, sort_keys=True, indent=1).encode())


def load(store: Store, key: str) -> Record | None:
    raw = store.get_bytes(key)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def retarget(value: Any, record: Mapping[str, Any]) -> Any:  # noqa: ANN401 - a stage's params["toolchain"]
    """A stage's toolchain param as the recorded builder would compute it; None when the record lacks it.

    The three shapes the graph uses are told apart by their keys: the TensorRT-LLM fingerprint
    (``tensorrt_llm``), the TensorRT plan fingerprint (``gpu``), or package versions.
    """
    if not isinstance(value, dict) or not value:
        return value
    if "tensorrt_llm" in value:
        return record.get("llm")
    if "gpu" in value:
        return record.get("engine")
    packages = record.get("packages", {})
    return {dist: packages.get(dist, version) for dist, version in value.items()}


def record(variables: Mapping[str, str]) -> TaskFailed | None:
    """Doit action of ``doit platform platform=<gpu> toolchain_id=<id> image=<image>`` (a writing cache needed)."""
    settings = cache.current()
    if not settings.writes or settings.url is None:
        return TaskFailed("cache_mode: recording a platform writes to the cache store: set cache=<url> and cache_mode=rw")
    try:
        key = record_key(*(check_name(v, variables.get(v, "")) for v in ("platform", "toolchain_id", "image")))
        save(Store(settings.url), key, live_record())
    except (UserError, StoreError) as exc:
        return TaskFailed(str(exc))
    log.info("platform: recorded this machine's toolchain as %s", key)
    return None


def record_task(variables: Mapping[str, str]) -> dict[str, Any]:
    return {
        "doc": "record this GPU builder's toolchain for doit plan on other machines: platform=<gpu> toolchain_id=<id> image=<image>",
        "actions": [(record, [variables])],
        "uptodate": [False],
        "verbosity": 2,
    }
