"""Hub sources through huggingface_hub's own cache, offline: a pinned sha, an explicit branch, a miss."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import TINY_YAML, copy_project, doit_env, read_json, run_doit

SHA = "0123456789abcdef0123456789abcdef01234567"


def seed_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder`` out the way huggingface_hub stores a downloaded snapshot (blobs, snapshots, refs)."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = root / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(os.path.relpath(blob, link.parent)))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(SHA)


def hub_yaml(revision: str) -> str:
    text = TINY_YAML.format(path="unused")
    return text.replace("source:\n  path: unused", f"source:\n  hf: acme/tiny-bert\n  revision: {revision}")


@pytest.fixture
def cache(tiny_bert: Path, tmp_path: Path) -> Path:
    hub = tmp_path / "hf-cache"
    seed_cache(hub, "acme/tiny-bert", tiny_bert)
    return hub


@pytest.mark.parametrize("revision", [SHA, "main"])
def test_hub_snapshot_is_fetched_from_the_cache_and_its_commit_recorded(cache: Path, tmp_path: Path, revision: str) -> None:
    project = copy_project(tmp_path / "p", {"tiny": hub_yaml(revision)})
    result = run_doit(project, "fetch:tiny", "target=cpu", env=doit_env({"HF_HUB_CACHE": str(cache)}))
    assert result.rc == 0, result.stdout + result.stderr
    record = read_json(project / "build/tiny/fetch/action.json")
    assert record["resolved_revision"] == SHA
    fetched = project / "build/tiny/fetch/model.safetensors"
    blob = (cache / "models--acme--tiny-bert/snapshots" / SHA / "model.safetensors").resolve()
    # The snapshot's links into blobs/ are followed; the blob is copied, so no write to build/ reaches the cache.
    assert not fetched.is_symlink()
    assert fetched.read_bytes() == blob.read_bytes()
    assert fetched.stat().st_ino != blob.stat().st_ino


def test_missing_snapshot_offline_is_one_line(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p", {"tiny": hub_yaml("main")})
    result = run_doit(project, "fetch:tiny", "target=cpu", env=doit_env({"HF_HUB_CACHE": str(tmp_path / "empty")}))
    assert result.rc != 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1
    assert lines[0].startswith("ERROR: fetch:tiny: cannot download acme/tiny-bert@main: ")
    assert "Traceback" not in result.stdout + result.stderr


def test_new_upstream_commit_on_a_branch_makes_fetch_outdated(cache: Path, tiny_bert: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p", {"tiny": hub_yaml("main")})
    env = doit_env({"HF_HUB_CACHE": str(cache)})
    assert run_doit(project, "fetch:tiny", "target=cpu", env=env).rc == 0
    assert run_doit(project, "fetch:tiny", "target=cpu", env=env).executed == set()
    # Upstream moves main to a new commit whose config differs (offline, the cache's refs/main says so).
    newer = "fedcba9876543210fedcba9876543210fedcba98"
    root = cache / "models--acme--tiny-bert"
    snapshot = root / "snapshots" / newer
    shutil.copytree(root / "snapshots" / SHA, snapshot, symlinks=True)
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").write_text(
        (tiny_bert / "config.json").read_text().replace('"hidden_act"', '"hidden_dropout_prob": 0.2, "hidden_act"')
    )
    (root / "refs" / "main").write_text(newer)
    info = run_doit(project, "info", "fetch:tiny", "target=cpu", env=env)
    assert f"source.commit: {SHA} -> {newer}" in info.stdout
    rerun = run_doit(project, "build:tiny", "target=cpu", env=env)
    assert rerun.rc == 0, rerun.stderr
    assert "fetch:tiny" in rerun.executed
    assert read_json(project / "build/tiny/fetch/action.json")["resolved_revision"] == newer
