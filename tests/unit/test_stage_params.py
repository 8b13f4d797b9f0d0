"""Every stage of the shipped models keeps its params, inputs and folders: their action keys do not move.

``data/params.json`` was written from the graph before ``tasks/`` was arranged in layers.  The machine's
toolchain (package versions, GPU, container, a Hub branch's commit) is pinned, so the file holds what the
project decides, not what this machine has installed.  After a deliberate change of what a stage reads,
rewrite it with ``python -m tests.unit.test_stage_params`` and review the diff: every changed entry moves keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.bench import perfrun
from tasks.core.inputnames import input_names
from tasks.core.stage import Stage, canonical
from tasks.stages import fetch, kinds
from tasks.tools import toolchain

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = Path(__file__).resolve().parent / "data" / "params.json"


def described(stage: Stage) -> Any:
    params = canonical(stage.params)
    if "pip" in params.get("source", {}):
        params["source"]["version"] = "installed"  # the pip package's version is this machine's
    return canonical({
        "params": params,
        "deps": {k: d.task_name + (f" ({d.part})" if d.part else "") for k, d in stage.deps.items()},
        "files": input_names(stage.files),
        "out_dir": stage.out_dir.as_posix(),
        "target": stage.target,
        "cached": stage.cached,
        "published": {k: v.as_posix() for k, v in stage.published.items()},
    })  # fmt: skip


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(toolchain, "package_version", lambda dist: f"version-of-{dist}")
    monkeypatch.setattr(toolchain, "gpu", lambda: {"gpu": "pinned-gpu", "compute_capability": "9.0"})
    monkeypatch.setattr(toolchain, "container", lambda: {"container": "pinned"})
    monkeypatch.setattr(toolchain, "find_trtexec", lambda: None)
    monkeypatch.setattr(toolchain, "find_trtllm_build", lambda: None)
    monkeypatch.setattr(fetch, "resolve_revision", lambda repo, rev: f"commit-of-{repo}@{rev}")
    # bench.tool auto: as on a machine without perf_analyzer on PATH.
    monkeypatch.setattr(perfrun, "resolve_tool", lambda tool: perfrun.BUILTIN if tool == perfrun.AUTO else tool)


def graph_stages() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for target in ("cpu", "trt"):
        graph = kinds.build_graph(toolchain.Target(target, "pinned"))
        found |= {f"{target}/{s.task_name}": described(s) for stages in graph.stages.values() for s in stages}
    return found


@pytest.mark.usefixtures("pinned")
def test_every_stage_of_the_shipped_models_is_unchanged() -> None:
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    found = graph_stages()
    assert sorted(found) == sorted(expected)
    changed = [name for name in expected if found[name] != expected[name]]
    assert changed == []


@pytest.mark.usefixtures("pinned")
def test_a_changed_param_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "CODE_VERSION", "changed")
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    found = graph_stages()
    assert sorted(n for n in expected if found[n] != expected[n]) == sorted(n for n in expected if "/fetch:" in n)


def _rewrite() -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        pinned.__wrapped__(monkeypatch)  # type: ignore[attr-defined]
        found = graph_stages()
    EXPECTED.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    _rewrite()
