"""doit plan: keys and sources (local / cache / build) for a second checkout, checked against what its build then records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.commands import platforms
from tests.helpers import FAKES, TINY_YAML, copy_project, doit_env, read_json, run_doit

CACHED_STAGES = ("fetch:tiny", "export:tiny", "engine:tiny")


def recorded_keys(project: Path, target: str = "cpu") -> dict[str, str]:
    """The action key each stage of ``tiny`` was built with (action.json beside its manifest; per target where it matters)."""
    keys = {}
    for stage in ("fetch", "export", "engine", "config", "repo"):
        folder = project / "build/tiny" / stage
        record = read_json(folder / "action.json" if stage in {"fetch", "export"} else folder / target / "action.json")
        keys[f"{stage}:tiny"] = str(record["key"])
    return keys


def plan(project: Path, store: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = project / "plan.json"
    result = run_doit(project, "plan", f"cache={store}", "cache_fetch=1", f"json={out}", *args, env=env)
    assert result.rc == 0, result.stdout + result.stderr
    data = read_json(out)
    assert "tiny" in result.stdout  # the table on stdout
    return data


def stages(data: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    (only,) = data["plans"]
    return {row["task"]: (row["source"], row["key"]) for row in only["stages"]}


@pytest.fixture(scope="module")
def built(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Checkout A built tiny with a writing cache in a folder store."""
    root = tmp_path_factory.mktemp("plan")
    store = root / "store"
    a = copy_project(root / "a", {"tiny": TINY_YAML.format(path=tiny_bert)})
    result = run_doit(a, "build:tiny", "target=cpu", f"cache={store}", "cache_mode=rw", "cache_fetch=1")
    assert result.rc == 0, result.stdout + result.stderr
    return a, store


def test_built_checkout_plans_every_stage_local_with_its_recorded_key(built: tuple[Path, Path]) -> None:
    a, store = built
    data = plan(a, store, "target=cpu")
    keys = recorded_keys(a)
    assert stages(data) == {task: ("local", key) for task, key in keys.items()}
    assert data["plans"][0]["all_cached"] is True
    assert data["matrix"] == {"include": []}


def test_fresh_checkout_plans_cache_hits_and_predicts_the_keys_its_build_records(built: tuple[Path, Path], tmp_path: Path) -> None:
    a, store = built
    b = copy_project(tmp_path / "elsewhere" / "b", {"tiny": (a / "models/tiny.yaml").read_text()})
    planned = stages(plan(b, store, "target=cpu"))
    keys = recorded_keys(a)
    assert {t: planned[t] for t in CACHED_STAGES} == {t: ("cache", keys[t]) for t in CACHED_STAGES}
    # config is not cached, but its key follows from the manifest a restore of fetch will write
    assert planned["config:tiny"] == ("build", keys["config:tiny"])
    assert planned["repo:tiny"] == ("build", None)  # below a stage that must build: unknown
    info = run_doit(b, "info", "fetch:tiny", "target=cpu", f"cache={store}", "cache_fetch=1")
    assert f"from cache {store}" in info.stdout, info.stdout + info.stderr
    info = run_doit(b, "info", "repo:tiny", "target=cpu", f"cache={store}", "cache_fetch=1")
    assert "would build (not a cached stage)" in info.stdout, info.stdout + info.stderr

    result = run_doit(b, "build:tiny", "target=cpu", f"cache={store}", "cache_fetch=1")
    assert result.rc == 0, result.stdout + result.stderr
    assert recorded_keys(b) == keys
    assert {s for s, _ in stages(plan(b, store, "target=cpu")).values()} == {"local"}


def test_without_the_store_a_fresh_checkout_must_build_and_enters_the_matrix(built: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = built
    b = copy_project(tmp_path / "b", {"tiny": (a / "models/tiny.yaml").read_text()})
    data = plan(b, tmp_path / "empty-store", "target=cpu")
    planned = stages(data)
    assert planned["fetch:tiny"] == ("build", recorded_keys(a)["fetch:tiny"])  # raw inputs: key known
    assert all(source == "build" for source, _ in planned.values())
    assert data["plans"][0]["to_build"] == list(CACHED_STAGES)
    assert data["matrix"] == {"include": [{"model": "tiny", "image": "plan", "platform": None}]}


def test_a_cpu_machine_plans_a_gpu_builder_from_its_recorded_toolchain(tiny_bert: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    gpu = copy_project(tmp_path / "gpu", {"tiny": TINY_YAML.format(path=tiny_bert)})
    on_gpu = doit_env(path_prefix=FAKES)  # the fake trtexec stands for the GPU builder's TensorRT
    args = ("target=trt", f"cache={store}", "cache_mode=rw", "cache_fetch=1")
    assert run_doit(gpu, "build:tiny", *args, env=on_gpu).rc == 0
    recorded = run_doit(gpu, "platform", "platform=l4", "toolchain_id=t1", "image=plan", *args, env=on_gpu)
    assert recorded.rc == 0, recorded.stdout + recorded.stderr
    record = read_json(store / platforms.record_key("l4", "t1", "plan"))
    engine = record["engine"]
    assert isinstance(engine, dict)
    assert engine["tensorrt"] != "not installed"  # what the fake trtexec reports

    cpu = copy_project(tmp_path / "cpu", {"tiny": (gpu / "models/tiny.yaml").read_text()})
    data = plan(cpu, store, "target=trt", "platform=l4", "toolchain_id=t1")
    planned = stages(data)
    keys = recorded_keys(gpu, "trt")
    assert planned["engine:tiny"] == ("cache", keys["engine:tiny"])
    assert data["plans"][0]["platform"] == "l4"
    assert data["matrix"] == {"include": []}
    own = stages(plan(cpu, store, "target=trt"))  # this machine's own (missing) TensorRT: another key
    assert own["engine:tiny"][0] == "build"
    unknown = stages(plan(cpu, store, "target=trt", "platform=h100", "toolchain_id=t1"))
    assert unknown["engine:tiny"] == ("build", None)
