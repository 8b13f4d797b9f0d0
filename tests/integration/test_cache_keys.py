"""Action keys do not depend on where the checkout is: two copies at different paths agree on every cached stage."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tasks.core import hashing
from tasks.core.inputnames import input_names
from tasks.core.stage import Stage, canonical, input_paths
from tasks.stages import kinds
from tasks.tools import toolchain
from tests.helpers import FAKES, ROOT, copy_project

LLM = """\
name: tiny-llama
kind: llm
family: llama
source:
  path: {path}
engine:
  max_batch_size: 4
  max_input_len: 48
  max_output_len: 16
triton:
  max_batch_size: 4
"""


def _key_material(project: Path, target: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Per stage: its params, and its inputs by the names the action key uses (raw files with their digests)."""
    monkeypatch.chdir(project)
    hashing.configure(project / "build/.cache/digests.sqlite")
    built = kinds.build_graph(toolchain.resolve_target(target), Path("models"))
    material: dict[str, Any] = {}
    for stages in built.stages.values():
        for stage in stages:
            material[stage.task_name] = _material(stage)
    return material


def _material(stage: Stage) -> dict[str, Any]:
    paths = input_paths(stage)
    raw = set(stage.files)
    inputs = {name: hashing.digest(p) if p in raw else "upstream manifest" for name, p in zip(input_names(paths), paths, strict=True)}
    return {"params": canonical(stage.params), "inputs": inputs, "cached": stage.cached}


@pytest.mark.parametrize("target", ["cpu", "trt"])
def test_two_checkouts_compute_the_same_key_material(target: str, llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    # The checkpoint lives inside each checkout (models/../ckpt), as a repository's own test data would.
    models = {"tiny-llama": LLM.format(path="../ckpt"), "minilm": (ROOT / "models/minilm.yaml").read_text()}
    projects = [copy_project(tmp_path / "a" / "checkout", models), copy_project(tmp_path / "elsewhere" / "deeper" / "clone", models)]
    for project in projects:
        shutil.copytree(llama, project / "ckpt")
    first, second = (_key_material(project, target, monkeypatch) for project in projects)
    assert first == second
    cached = {name for name, m in first.items() if m["cached"]}
    assert {"export:minilm", "engine:minilm", "convert:tiny-llama", "engine:tiny-llama"} <= cached
    assert not any(name.startswith(("repo:", "bench:", "config:")) for name in cached)
    # No absolute path of either checkout anywhere in what the keys hash.
    assert str(tmp_path) not in repr(first)
    assert "ckpt/config.json" in first["fetch:tiny-llama"]["inputs"]
    assert any(k.startswith("external:") for k in first["fetch:minilm"]["inputs"])  # the pip package's folder
    # The templates are this test's own tasks/ package, outside both copies: named by role, not path.
    assert any(k.startswith("external:") and k.endswith("config.pbtxt") for k in first["config:minilm"]["inputs"])
