"""The cache protocol on the local-folder store, with stages built in-process."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.core import cache, fsops, hashing, manifest
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext, _build, action_key, input_digests
from tasks.core.store import Store


def _stage(runs: list[str], payload: bytes = b"engine bytes", *, cached: bool = True, name: str = "engine") -> Stage:
    def action(ctx: StageContext) -> None:
        runs.append(ctx.stage.task_name)
        (ctx.out / "plan").mkdir()
        (ctx.out / "plan" / "model.plan").write_bytes(payload)
        (ctx.out / "empty").mkdir()
        ctx.record["argv"] = ["trtexec", "--fp16"]

    return Stage(name, "m", {"engine": {"fp16": True}}, Path("build/m") / name, action, "test stage", cached=cached)


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    hashing.configure(tmp_path / "digests.sqlite")
    folder = tmp_path / "store"
    cache.configure(cache.Settings(str(folder), "rw"))
    yield folder
    cache.configure(cache.Settings())


def _key(stage: Stage) -> str:
    return action_key(stage, input_digests(stage))


def _forget_local(stage: Stage) -> None:
    shutil.rmtree(stage.out_dir)


def test_miss_uploads_blobs_then_entry_and_a_hit_restores_without_running(store_dir: Path) -> None:
    runs: list[str] = []
    stage = _stage(runs)
    _build(stage)
    assert runs == ["engine:m"]
    store = Store(str(store_dir))
    entry = json.loads(store.get_bytes(f"ac/{_key(stage)}") or b"")
    digest = entry["manifest"]["files"]["plan/model.plan"]["sha256"]
    assert store.get_bytes(f"cas/{digest}") == b"engine bytes"
    assert entry["record"]["argv"] == ["trtexec", "--fp16"]
    _forget_local(stage)
    _build(stage)
    assert runs == ["engine:m"]
    assert (stage.out_dir / "plan/model.plan").read_bytes() == b"engine bytes"
    assert (stage.out_dir / "empty").is_dir()
    record = json.loads((stage.out_dir / manifest.RECORD).read_text())
    assert record["from_cache"] == str(store_dir)
    assert record["argv"] == ["trtexec", "--fp16"]
    assert record["key"] == _key(stage)


def test_read_only_mode_never_writes(store_dir: Path) -> None:
    cache.configure(cache.Settings(str(store_dir), "ro"))
    _build(_stage([]))
    assert not store_dir.exists() or not any(store_dir.rglob("*"))


def test_an_uncached_stage_never_touches_the_store(store_dir: Path) -> None:
    _build(_stage([], cached=False))
    assert not store_dir.exists() or not any(store_dir.rglob("*"))


def test_a_corrupt_blob_is_refused_and_the_stage_built_locally(store_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs: list[str] = []
    stage = _stage(runs)
    _build(stage)
    entry = json.loads(Store(str(store_dir)).get_bytes(f"ac/{_key(stage)}") or b"")
    digest = entry["manifest"]["files"]["plan/model.plan"]["sha256"]
    (store_dir / "cas" / digest).write_bytes(b"engine bytez")
    _forget_local(stage)
    with caplog.at_level(logging.WARNING):
        _build(stage)
    assert runs == ["engine:m", "engine:m"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "sha256" in warnings[0].getMessage()
    assert "from_cache" not in json.loads((stage.out_dir / manifest.RECORD).read_text())


def test_an_entry_missing_after_its_blobs_is_a_miss(store_dir: Path) -> None:
    runs: list[str] = []
    stage = _stage(runs)
    _build(stage)
    (store_dir / "ac" / _key(stage)).unlink()
    _forget_local(stage)
    _build(stage)
    assert runs == ["engine:m", "engine:m"]
    assert (store_dir / "ac" / _key(stage)).is_file()


def test_a_loser_of_the_entry_race_publishes_the_winners_bytes(store_dir: Path) -> None:
    winner = _stage([], b"winner plan")
    _build(winner)
    _forget_local(winner)
    # The loser looked its key up before the winner wrote the entry: simulate by building with the lookup skipped.
    loser = _stage([], b"loser plan")
    original = cache.restore
    try:
        cache.restore = lambda *_args: None
        _build(loser)
    finally:
        cache.restore = original
    assert (loser.out_dir / "plan/model.plan").read_bytes() == b"winner plan"
    assert len(list((store_dir / "ac").iterdir())) == 1


def test_blobs_present_under_build_are_linked_not_downloaded(store_dir: Path) -> None:
    stage = _stage([])
    _build(stage)
    _build(_stage([], name="twin"))  # another stage holding the same bytes
    _forget_local(stage)
    for blob in (store_dir / "cas").iterdir():
        blob.unlink()  # a download would now fail: only a local link can restore it
    _build(stage)
    assert (stage.out_dir / "plan/model.plan").read_bytes() == b"engine bytes"
    assert (stage.out_dir / "plan/model.plan").stat().st_nlink >= 2


def test_settings_variables_win_over_environment_and_default_to_read_only() -> None:
    env = {cache.URL_ENV: "s3://ci/cache", cache.MODE_ENV: "rw"}
    assert cache.settings_from({}, env) == cache.Settings("s3://ci/cache", "rw")
    assert cache.settings_from({"cache_mode": "ro"}, env).mode == "ro"
    assert cache.settings_from({"cache": "/srv/cache"}, {}) == cache.Settings("/srv/cache", "ro")
    assert not cache.settings_from({"cache_mode": "off"}, env).reads
    assert cache.settings_from({}, {}) == cache.Settings(None, "off")
    with pytest.raises(UserError, match="cache_mode"):
        cache.settings_from({"cache_mode": "write"}, env)


def test_local_blob_scan_skips_work_trees_and_folders_removed_while_it_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = Path("build/m/export")
    out.mkdir(parents=True)
    (out / "model.onnx").write_bytes(b"onnx")
    files, dirs = manifest.scan(out)
    fsops.write_json_atomic(out / manifest.MANIFEST, manifest.Manifest("export", "m", "cpu", files, dirs).to_json())
    work = Path("build/m/.export.tmp-999999")  # another build's work tree, removed at any moment
    work.mkdir()
    real_scandir = os.scandir

    def vanishing(path: Any) -> Any:
        if isinstance(path, str | os.PathLike) and Path(path) == work and work.exists():
            shutil.rmtree(work)  # gone between the listing of build/m and a look inside
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", vanishing)
    found = cache._local_blobs()
    assert found == {hashlib.sha256(b"onnx").hexdigest(): out / "model.onnx"}
