"""The graph snapshot: a reused graph is the one a fresh load builds, and each kind of input edit invalidates it."""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tasks.core import hashing, observe
from tasks.core.lazy import LazyFunction
from tasks.core.stage import Stage, canonical, to_task
from tasks.stages import fetch, kinds, snapshot
from tasks.stages.graph import Graph
from tasks.tools import toolchain, versions
from tests.helpers import TINY_YAML

ROOT = Path(__file__).resolve().parents[2]
CPU = toolchain.Target("cpu", "requested on the command line")
VARIABLES = {"cache": "", "cache_mode": "off", "cache_fetch": "False"}


def _callable(value: object) -> str:
    if isinstance(value, partial):
        return f"partial({_callable(value.func)}, {value.args!r}, {sorted(value.keywords.items())!r})"
    if isinstance(value, LazyFunction):
        return repr(value)
    return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"


def _stage(stage: Stage) -> dict[str, Any]:
    task = to_task(stage)
    found: dict[str, Any] = canonical({
        "params": stage.params,
        "out_dir": str(stage.out_dir),
        "action": _callable(stage.action),
        "doc": stage.doc,
        "deps": {k: d.task_name for k, d in stage.deps.items()},
        "files": [str(p) for p in stage.files],
        "target": stage.target,
        "meta": str(stage.meta),
        "log_dir": str(stage.log_dir),
        "published": {k: str(v) for k, v in stage.published.items()},
        "served": str(stage.served),
        "source": str(stage.source),
        "cached": stage.cached,
        "fingerprint": _callable(stage.fingerprint) if stage.fingerprint else None,
        "task": {k: task[k] for k in ("name", "doc", "file_dep", "targets")},
    })  # fmt: skip
    return found


def described(graph: Graph) -> dict[str, Any]:
    """Everything doit and the stage runner get from a graph, in a form that compares by value."""
    return {
        "target": [graph.target.name, graph.target.reason],
        "specs": [(s.name, str(s.file), [v.variant for v in s.variants]) for s in graph.specs],
        "stages": {name: [_stage(s) for s in stages] for name, stages in graph.stages.items()},
    }


def _files_of_a_project(dest: Path, models: dict[str, str]) -> Path:
    """What a load reads of a project (no doit runs here): the package, dodo.py, docker/versions.env, models/."""
    shutil.copytree(ROOT / "tasks", dest / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dodo.py", dest / "dodo.py")
    shutil.copytree(ROOT / "docker", dest / "docker")
    if models:
        (dest / "models").mkdir()
    else:
        shutil.copytree(ROOT / "models", dest / "models")
    return dest


def _project(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch, *, shipped: bool) -> Path:
    local = shutil.copytree(tiny_bert, tmp_path / "ckpt")
    tiny = {name: TINY_YAML.format(path=local).replace("name: tiny", f"name: {name}") for name in ("tiny", "tiny2")}
    root = _files_of_a_project(tmp_path / "project", {} if shipped else tiny)
    for name, text in tiny.items():
        (root / "models" / f"{name}.yaml").write_text(text)
    monkeypatch.chdir(root)
    # The copy's package stands for the code: editing it must not touch the checkout's.
    monkeypatch.setattr(snapshot, "_PACKAGE", root / "tasks")
    monkeypatch.setattr(snapshot, "DODO", root / "dodo.py")
    monkeypatch.setattr(versions, "VERSIONS_FILE", root / "docker" / "versions.env")
    monkeypatch.setattr(fetch, "resolve_revision", lambda repo, rev: f"commit-of-{repo}@{rev}")
    return root


@pytest.fixture
def project(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two tiny encoders from a local folder."""
    return _project(tmp_path, tiny_bert, monkeypatch, shipped=False)


@pytest.fixture
def shipped(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped models (encoders, LLMs, an ensemble, Hub sources pinned offline) and the two tiny ones."""
    return _project(tmp_path, tiny_bert, monkeypatch, shipped=True)


class Loads:
    """A builder that counts fresh loads."""

    def __init__(self, target: toolchain.Target = CPU) -> None:
        self.count = 0
        self.target = target

    def __call__(self) -> Graph:
        self.count += 1
        return kinds.build_graph(self.target)


def settle() -> None:
    """Past the racy window: a file written just before a load is not trusted to keep its signature."""
    time.sleep(snapshot._RACY_NS / 1e9 + 0.01)


def reload(loads: Loads, variables: dict[str, str] = VARIABLES, target: toolchain.Target = CPU) -> Graph:
    return snapshot.cached(target, variables, loads)


@pytest.mark.usefixtures("shipped")
def test_a_reused_graph_is_the_graph_a_fresh_load_builds() -> None:
    settle()
    loads = Loads()
    first = reload(loads)
    second = reload(loads)
    assert loads.count == 1
    assert second is not first
    fresh = kinds.build_graph(CPU)
    assert described(second) == described(fresh) == described(first)
    # The actions are resolved by name when called: they are the stage modules' functions.
    action = second.stage_of("fetch", "tiny").action
    assert isinstance(action, partial)
    assert isinstance(action.func, LazyFunction)
    assert action.func.resolve() is fetch.action


def _edit_model(root: Path) -> None:
    path = root / "models" / "tiny.yaml"
    path.write_text(path.read_text().replace("max_seq_len: 32\n", "max_seq_len: 16\n", 1))


def _new_model(root: Path) -> None:
    shutil.copy(root / "models" / "tiny.yaml", root / "models" / "tiny3.yaml")
    text = (root / "models" / "tiny3.yaml").read_text().replace("name: tiny", "name: tiny3")
    (root / "models" / "tiny3.yaml").write_text(text)


def _removed_model(root: Path) -> None:
    (root / "models" / "tiny2.yaml").unlink()


def _checkpoint_config(root: Path) -> None:
    config = root.parent / "ckpt" / "config.json"
    data = json.loads(config.read_text())
    data["layer_norm_eps"] = 1e-6
    config.write_text(json.dumps(data))


def _checkpoint_file_added(root: Path) -> None:
    (root.parent / "ckpt" / "extra.safetensors.index.json").write_text("{}")


def _code(root: Path) -> None:
    path = root / "tasks" / "stages" / "kinds.py"
    path.write_text(path.read_text() + "# note\n")


def _template(root: Path) -> None:
    path = next((root / "tasks" / "templates" / "encoder").glob("*/config.pbtxt"))
    path.write_text(path.read_text() + "# note\n")


def _pinned_versions(root: Path) -> None:
    path = root / "docker" / "versions.env"
    path.write_text(path.read_text() + "# note\n")


def _dodo(root: Path) -> None:
    path = root / "dodo.py"
    path.write_text(path.read_text() + "# note\n")


EDITS: dict[str, Callable[[Path], None]] = {
    "dodo.py": _dodo,
    "model file edited": _edit_model,
    "model file added": _new_model,
    "model file removed": _removed_model,
    "checkpoint config.json edited": _checkpoint_config,
    "file added to a checkpoint folder": _checkpoint_file_added,
    "code of the package": _code,
    "a template": _template,
    "docker/versions.env": _pinned_versions,
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_each_kind_of_input_edit_loads_the_models_again(project: Path, edit: str) -> None:
    settle()
    loads = Loads()
    reload(loads)
    EDITS[edit](project)
    settle()
    graph = reload(loads)
    assert loads.count == 2, f"{edit}: the snapshot was reused"
    assert described(graph) == described(kinds.build_graph(CPU))
    reload(loads)
    assert loads.count == 2, f"{edit}: the new graph was not kept"


def test_the_key_holds_the_checkouts_dodo_when_doit_runs_from_another_folder(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # doit -f <checkout>/dodo.py -d <folder>, as the conformance kit runs its projects.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = snapshot.key(CPU, VARIABLES, {})
    _dodo(project)
    assert snapshot.key(CPU, VARIABLES, {}) != before


@pytest.mark.usefixtures("shipped")
@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("target", {"target": toolchain.Target("trt", "requested on the command line")}),
        ("cache variables", {"variables": {**VARIABLES, "cache": "file:///tmp/x", "cache_mode": "ro"}}),
    ],
)
def test_target_and_variables_have_their_own_snapshot(what: str, change: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "find_trtexec", lambda: None)
    monkeypatch.setattr(toolchain, "find_trtllm_build", lambda: None)
    settle()
    target = change.get("target", CPU)
    loads = Loads(target)
    reload(Loads())
    reload(loads, change.get("variables", VARIABLES), target)
    assert loads.count == 1, what


@pytest.mark.usefixtures("project")
def test_an_environment_variable_the_loaders_read_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot.key(CPU, VARIABLES, os.environ)
    monkeypatch.setenv("HF_HOME", "/elsewhere")
    assert snapshot.key(CPU, VARIABLES, os.environ) != before
    monkeypatch.setenv("UNRELATED_SHELL_VARIABLE", "1")
    assert snapshot.key(CPU, VARIABLES, {**os.environ, "HF_HOME": "/elsewhere"}) == snapshot.key(CPU, VARIABLES, os.environ)


@pytest.mark.usefixtures("project")
def test_a_load_that_asked_the_hub_is_not_kept() -> None:
    settle()

    def asks_the_hub() -> Graph:
        observe.volatile("the Hub for org/model@main")
        return kinds.build_graph(CPU)

    snapshot.cached(CPU, VARIABLES, asks_the_hub)
    loads = Loads()
    reload(loads)
    assert loads.count == 1


def test_a_file_written_during_the_load_is_not_trusted(project: Path) -> None:
    settle()
    loads = Loads()
    _edit_model(project)  # no pause: its signature may not change on the next edit
    reload(loads)
    settle()
    reload(loads)
    assert loads.count == 2  # the first load was not kept
    reload(loads)
    assert loads.count == 2  # the second one was past the window: kept


@pytest.mark.usefixtures("project")
def test_a_torn_snapshot_is_ignored() -> None:
    settle()
    loads = Loads()
    reload(loads)
    (path,) = snapshot.FOLDER.glob("*.pickle")
    path.write_bytes(path.read_bytes()[:100])
    assert described(reload(loads)) == described(kinds.build_graph(CPU))
    assert loads.count == 2


def _environment_names(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in {"os.environ.get", "os.getenv", "env.get"} and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield first.value
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" and isinstance(node.slice, ast.Constant):
            yield str(node.slice.value)


def test_every_environment_variable_the_graph_code_reads_is_in_the_key() -> None:
    # Commands (serve, publish, the kit) and the Triton/bench layers read the environment at run time, not while loading.
    loading = ("core", "tools", "families", "spec", "stages")
    names = {
        name
        for layer in loading
        for path in (ROOT / "tasks" / layer).rglob("*.py")
        for name in _environment_names(ast.parse(path.read_text(encoding="utf-8")))
    }
    assert names, "no environment read found: the scan is broken"
    missing = sorted(n for n in names if not n.startswith(snapshot.ENV_PREFIXES))
    assert missing == []


@pytest.mark.usefixtures("project")
def test_what_a_load_logged_is_said_again_when_its_snapshot_is_reused(caplog: pytest.LogCaptureFixture) -> None:
    settle()

    def warns() -> Graph:
        logging.getLogger("tasks.tools.trtexec").warning("engine.flags: --fp16 is deprecated in TensorRT 10.14")
        return kinds.build_graph(CPU)

    caplog.set_level(logging.INFO, logger="tasks")
    snapshot.cached(CPU, VARIABLES, warns)
    caplog.clear()
    snapshot.cached(CPU, VARIABLES, Loads())
    said = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("tasks.tools.trtexec", logging.WARNING, "engine.flags: --fp16 is deprecated in TensorRT 10.14") in said


def test_touched_inputs_cost_a_hash_each_then_nothing(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settle()
    loads = Loads()
    reload(loads)
    template = next((project / "tasks" / "templates" / "encoder").glob("*/config.pbtxt"))  # code, and a config input
    touched = [project / "models" / "tiny.yaml", project.parent / "ckpt" / "config.json", template, project / "models"]
    later = time.time() + 5
    for path in touched:
        os.utime(path, (later, later))
    hashed: list[Path] = []
    sha256_file = hashing.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return sha256_file(path)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    first = reload(loads)
    assert loads.count == 1  # same bytes: the snapshot stands
    assert sorted(map(str, hashed)) == sorted(str(p) for p in touched if p.is_file())
    hashed.clear()
    assert described(reload(loads)) == described(first)
    assert hashed == []  # the new stats were kept: the next run hashes nothing
    assert loads.count == 1


@pytest.mark.usefixtures("shipped")
def test_a_graph_of_named_models_has_their_stages_exactly_as_the_whole_graph() -> None:
    whole = described(kinds.build_graph(CPU))["stages"]
    part = described(kinds.build_graph(CPU, only=frozenset({"vlm", "tiny"})))["stages"]
    models = {s["task"]["name"] for stages in part.values() for s in stages}
    assert models == {"vlm", "clip-vision", "minilm", "tiny"}
    for name, stages in part.items():
        assert stages == [s for s in whole[name] if s["task"]["name"] in models]
