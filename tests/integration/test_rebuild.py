"""The rebuild rules, each pinned by the exact set of tasks doit executes.

One tiny BERT project is built once; the tests then walk through edits in order
(each leaves the project built for the next one).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers import TINY_YAML, copy_project, doit_env, edit, read_json, run_doit

ALL = {"fetch:tiny", "export:tiny", "engine:tiny", "config:tiny", "repo:tiny"}


@pytest.fixture(scope="module")
def project(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("rebuild"), {"tiny": TINY_YAML.format(path=tiny_bert)})
    first = run_doit(root, "build:tiny", "target=cpu")
    assert first.rc == 0, first.stderr
    assert first.executed == ALL
    return root


def build(project: Path, *extra: str, env: dict[str, str] | None = None) -> set[str]:
    result = run_doit(project, "build:tiny", "target=cpu", *extra, env=env)
    assert result.rc == 0, result.stdout + result.stderr
    return result.executed


def test_noop_runs_nothing(project: Path) -> None:
    assert build(project) == set()


def test_touch_of_every_input_runs_nothing_and_hashes_each_file_once(project: Path, tiny_bert: Path) -> None:
    inputs = [p for p in tiny_bert.rglob("*") if p.is_file()] + [p for p in (project / "tasks/templates/encoder").rglob("*") if p.is_file()]
    later = time.time() + 5
    for path in inputs:
        os.utime(path, (later, later))
    touched = run_doit(project, "build:tiny", "target=cpu", "log=debug")
    assert touched.rc == 0
    assert touched.executed == set()
    hashed = [line.removeprefix("hashed ").rsplit(" (", 1)[0] for line in touched.stderr.splitlines() if line.startswith("hashed ")]
    # Each touched file exactly once: the stage inputs, and the trt-only template too, because the
    # graph snapshot keys on every file of the package by content. Fetch outputs are copies of the
    # checkpoint files, untouched, so their digests stay cached.
    assert sorted(hashed) == sorted(str(p) for p in inputs)
    again = run_doit(project, "build:tiny", "target=cpu", "log=debug")
    assert again.executed == set()
    assert [line for line in again.stderr.splitlines() if line.startswith("hashed ")] == []


def test_triton_edit_rebuilds_config_and_repo(project: Path) -> None:
    edit(project / "models/tiny.yaml", "triton:\n  max_batch_size: 8", "triton:\n  max_batch_size: 4")
    assert build(project) == {"config:tiny", "repo:tiny"}
    assert "max_batch_size: 4" in (project / "repos/tiny/tiny/config.pbtxt").read_text()


def test_engine_batch_edit_on_cpu_stops_at_identical_engine_bytes(project: Path) -> None:
    before = read_json(project / "build/tiny/engine/cpu/manifest.json")
    edit(project / "models/tiny.yaml", "max_batch_size: 8\n  max_seq_len", "max_batch_size: 16\n  max_seq_len")
    assert build(project) == {"engine:tiny"}
    assert read_json(project / "build/tiny/engine/cpu/manifest.json") == before


def test_engine_value_read_by_config_rebuilds_config_too(project: Path) -> None:
    edit(project / "models/tiny.yaml", "max_seq_len: 32", "max_seq_len: 24")
    assert build(project) == {"engine:tiny", "config:tiny", "repo:tiny"}
    assert '"24"' in (project / "repos/tiny/tiny_tokenizer/config.pbtxt").read_text()


def test_export_edit_rebuilds_export_and_what_its_bytes_feed(project: Path) -> None:
    edit(project / "models/tiny.yaml", "opset: 18", "opset: 18\n  pooling: cls")
    assert build(project) == {"export:tiny", "engine:tiny", "repo:tiny"}


def test_template_edit_rebuilds_config_and_repo(project: Path) -> None:
    path = project / "tasks/templates/encoder/ensemble/config.pbtxt"
    path.write_text(path.read_text() + "# local note\n", encoding="utf-8")
    assert build(project) == {"config:tiny", "repo:tiny"}


def fake_dist(folder: Path, name: str, version: str) -> None:
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")


def test_toolchain_change_rebuilds_only_the_stages_that_depend_on_it(project: Path, tmp_path: Path) -> None:
    fake_dist(tmp_path / "ort", "onnxruntime", "99.0.0")
    assert build(project, env=doit_env({"PYTHONPATH": str(tmp_path / "ort")})) == {"engine:tiny"}
    record = read_json(project / "build/tiny/engine/cpu/action.json")
    assert record["params"]["toolchain"] == {"onnxruntime": "99.0.0"}  # type: ignore[index]
    fake_dist(tmp_path / "torch", "torch", "99.0.0")
    env = doit_env({"PYTHONPATH": os.pathsep.join([str(tmp_path / "ort"), str(tmp_path / "torch")])})
    assert build(project, env=env) == {"export:tiny"}  # same ONNX bytes: stops at export
    assert build(project) == {"export:tiny", "engine:tiny"}  # back to the real versions


def test_info_names_the_changed_param(project: Path) -> None:
    edit(project / "models/tiny.yaml", "max_seq_len: 24", "max_seq_len: 20")
    info = run_doit(project, "info", "engine:tiny", "target=cpu")
    assert "params changed (target cpu): engine.max_seq_len: 24 -> 20" in info.stdout
    assert build(project) == {"engine:tiny", "config:tiny", "repo:tiny"}


def test_deleted_repository_rebuilds_repo_only(project: Path) -> None:
    repo = project / "repos/tiny"
    for path in sorted(repo.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    repo.rmdir()
    assert build(project) == {"repo:tiny"}
    assert (repo / "tiny_encoder/1/model.onnx").stat().st_ino == (project / "build/tiny/engine/cpu/model.onnx").stat().st_ino


def test_failed_rebuild_keeps_the_previous_repository(project: Path) -> None:
    before = {p.relative_to(project): p.read_bytes() for p in (project / "repos/tiny").rglob("*") if p.is_file()}
    path = project / "tasks/templates/encoder/tokenizer/config.pbtxt"
    good = path.read_text()
    path.write_text(good.replace("data_type: TYPE_STRING", "data_type: TYPE_STRNG"), encoding="utf-8")
    failed = run_doit(project, "build:tiny", "target=cpu")
    assert failed.rc != 0
    assert "TYPE_STRNG" in failed.stdout + failed.stderr
    after = {p.relative_to(project): p.read_bytes() for p in (project / "repos/tiny").rglob("*") if p.is_file()}
    assert after == before
    path.write_text(good, encoding="utf-8")
    assert build(project) == {"config:tiny"}  # same bytes as the last good config: repo untouched


def test_a_key_only_trtexec_reads_runs_nothing_on_cpu_and_info_names_it(project: Path) -> None:
    edit(project / "models/tiny.yaml", "engine:\n", "engine:\n  precision: fp16\n  opt_batch_size: 4\n")
    assert build(project) == set()
    info = run_doit(project, "info", "engine:tiny", "target=cpu")
    assert "status     : up-to-date" in info.stdout
    assert "'not read by target cpu'" in info.stdout
    assert 'engine.precision: "fp16"' in info.stdout
    assert "engine.opt_batch_size: 4" in info.stdout
    assert "max_batch_size" not in info.stdout.split("not read by target cpu")[1]
