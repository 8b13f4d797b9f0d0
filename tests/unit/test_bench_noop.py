"""scripts/bench_noop.py: the bare doit project has the measured project's shape."""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from doit import loader

ROOT = Path(__file__).resolve().parents[2]


def bench_noop() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_noop", ROOT / "scripts" / "bench_noop.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task(name: str, *, file_dep: list[str], targets: list[str], task_dep: list[str], actions: bool = True) -> dict[str, Any]:
    return {"name": name, "file_dep": file_dep, "task_dep": task_dep, "targets": targets, "actions": actions, "group": False}


def group(name: str, subtasks: list[str]) -> dict[str, Any]:
    return {"name": name, "file_dep": [], "task_dep": subtasks, "targets": [], "actions": False, "group": True}


def project_tasks(checkpoint: Path) -> list[dict[str, Any]]:
    """What the loader dump gives for a two-model project: groups, sub-tasks, an empty group, a plain task."""
    weights = [str(checkpoint / "config.json"), str(checkpoint / "model.safetensors")]
    found: list[dict[str, Any]] = []
    for model in ("a", "b"):
        fetched = f"build/{model}/fetch/manifest.json"
        found += [
            task(f"fetch:{model}", file_dep=weights, targets=[fetched], task_dep=[]),
            task(
                f"repo:{model}", file_dep=[fetched, "tasks/templates/t.pbtxt"], targets=[f"build/{model}/repo/manifest.json"], task_dep=[]
            ),
            task(f"build:{model}", file_dep=[], targets=[], task_dep=[f"repo:{model}"], actions=False),
        ]
    return [*found, group("fetch", ["fetch:a", "fetch:b"]), group("repo", ["repo:a", "repo:b"]), group("build", ["build:a", "build:b"]),
            group("index", []), task("plan", file_dep=[], targets=[], task_dep=[])]  # fmt: skip


def write_project(root: Path, tasks: list[dict[str, Any]]) -> None:
    for entry in tasks:
        for path in entry["file_dep"] + entry["targets"]:
            file = Path(path) if Path(path).is_absolute() else root / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(f"bytes of {path}", encoding="utf-8")


def test_the_bare_project_loads_the_same_tasks_with_mirrored_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = tmp_path / "ckpt"
    tasks = project_tasks(checkpoint)
    write_project(tmp_path / "project", tasks)
    bare = tmp_path / "bare"

    bench_noop().write_bare({"default_tasks": ["build"], "tasks": tasks}, tmp_path / "project", bare)
    monkeypatch.chdir(bare)
    namespace = runpy.run_path(str(bare / "dodo.py"))
    loaded = {t.name: t for t in loader.load_tasks(namespace)}

    assert sorted(loaded) == sorted(t["name"] for t in tasks)
    assert namespace["DOIT_CONFIG"] == {"backend": "sqlite3", "dep_file": "build/.doit.db", "default_tasks": ["build"]}
    for expected in tasks:
        got = loaded[expected["name"]]
        assert len(got.file_dep) == len(expected["file_dep"]), got.name
        assert sorted(got.task_dep) == sorted(expected["task_dep"]), got.name
        assert bool(got.actions) == expected["actions"], got.name
        assert got.has_subtask == expected["group"], got.name
        for path in [*got.file_dep, *got.targets]:
            assert not Path(path).is_absolute(), path  # the checkpoint is mirrored inside the bare project
            assert (bare / path).read_text(encoding="utf-8").startswith("bytes of "), path
    assert loaded["fetch:a"].file_dep == {f"external{checkpoint}/config.json", f"external{checkpoint}/model.safetensors"}
