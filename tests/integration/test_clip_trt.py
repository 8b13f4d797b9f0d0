"""CLIP vision and the vlm ensemble on target trt without a GPU: a fake trtexec (test double) on PATH.

Pins the trtexec argv (shapes from the image size, precision, INT8 calibration), the
persistent timing cache that never makes a build outdated, and which stages a change
rebuilds across models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import CLIP_VISION_YAML, FAKES, TINY_YAML, VLM_YAML, DoitRun, copy_project, doit_env, edit, read_json, run_doit

CACHE_DIR = "build/clipv/timing-cache"


def argv_log(root: Path) -> Path:
    return root / "trtexec-argv.jsonl"


def build(root: Path, *tasks: str) -> DoitRun:
    env = doit_env({"FAKE_TRTEXEC_LOG": str(argv_log(root))}, path_prefix=FAKES)
    return run_doit(root, *(tasks or ("build",)), "target=trt", env=env)


def last_call(root: Path, model: str) -> list[str]:
    calls: list[list[str]] = [json.loads(line) for line in argv_log(root).read_text().splitlines()]
    return [c for c in calls if c[0] == f"--onnx=build/{model}/export/model.onnx"][-1]


@pytest.fixture(scope="module")
def project(tiny_bert: Path, tiny_clip_vision: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = CLIP_VISION_YAML.format(name="clipv", path=tiny_clip_vision).replace(
        "  opt_batch_size: 4\n", "  opt_batch_size: 4\n  precision: fp16\n"
    )
    models = {
        "clipv": clip,
        "tiny": TINY_YAML.format(path=tiny_bert),
        "other": TINY_YAML.format(path=tiny_bert).replace("name: tiny", "name: other"),
        "vlm": VLM_YAML,
    }
    root = copy_project(tmp_path_factory.mktemp("vlm-trt"), models)
    result = build(root)
    assert result.rc == 0, result.stdout + result.stderr
    return root


def test_trtexec_gets_image_shapes_precision_and_a_timing_cache(project: Path) -> None:
    argv = last_call(project, "clipv")
    assert argv[2:7] == [
        "--skipInference",
        "--minShapes=pixel_values:1x3x32x32",
        "--optShapes=pixel_values:4x3x32x32",
        "--maxShapes=pixel_values:8x3x32x32",
        "--fp16",
    ]
    assert argv[7].startswith(f"--timingCacheFile={CACHE_DIR}/.10.14.1-none-none.cache.tmp-")
    assert len(argv) == 8
    record = read_json(project / "build/clipv/engine/trt/action.json")
    assert record["timing_cache"] == {"path": f"{CACHE_DIR}/10.14.1-none-none.cache", "reused": False, "bytes_before": 0, "bytes_after": 8}
    assert sorted(p.name for p in (project / CACHE_DIR).iterdir()) == ["10.14.1-none-none.cache"]


def test_timing_cache_is_reused_and_never_makes_a_build_outdated(project: Path) -> None:
    cache = project / CACHE_DIR / "10.14.1-none-none.cache"
    cache.write_bytes(cache.read_bytes() + b"grown by another build")
    assert build(project).executed == set()
    cache.unlink()
    assert build(project).executed == set()
    edit(project / "models/clipv.yaml", "opt_batch_size: 4", "opt_batch_size: 2")
    assert build(project).executed == {"engine:clipv", "repo:clipv", "repo:vlm"}
    edit(project / "models/clipv.yaml", "opt_batch_size: 2", "opt_batch_size: 3")
    assert build(project).executed == {"engine:clipv", "repo:clipv", "repo:vlm"}
    record = read_json(project / "build/clipv/engine/trt/action.json")
    assert record["timing_cache"] == {"path": f"{CACHE_DIR}/10.14.1-none-none.cache", "reused": True, "bytes_before": 8, "bytes_after": 16}
    assert "--optShapes=pixel_values:3x3x32x32" in last_call(project, "clipv")


def test_rebuilds_cross_model_dependencies_exactly(project: Path) -> None:
    # A member's engine: its plan changes, so the ensemble's repository is rebuilt; nothing of the other member.
    edit(project / "models/tiny.yaml", "max_seq_len: 32", "max_seq_len: 24")
    assert build(project).executed == {"engine:tiny", "config:tiny", "config:vlm", "repo:tiny", "repo:vlm"}
    # A member's serving settings: its config and the repositories holding it.
    edit(project / "models/clipv.yaml", "triton:\n  max_batch_size: 8\n", "triton:\n  max_batch_size: 8\n  max_queue_delay_us: 250\n")
    assert build(project).executed == {"config:clipv", "config:vlm", "repo:clipv", "repo:vlm"}
    # A model that is not a member: its own stages only.
    edit(project / "models/other.yaml", "max_seq_len: 32", "max_seq_len: 16")
    assert build(project).executed == {"engine:other", "config:other", "repo:other"}
    # The ensemble's own file: its config and repository only.
    edit(project / "models/vlm.yaml", "max_batch_size: 8", "max_batch_size: 4")
    assert build(project).executed == {"config:vlm", "repo:vlm"}


def test_int8_passes_the_calibration_cache_and_rebuilds_when_it_changes(project: Path) -> None:
    calib = project / "models/clipv-calib.cache"
    calib.write_bytes(b"TRT-1014-EntropyCalibration2\npixel_values: 3c010a14\n")
    edit(project / "models/clipv.yaml", "precision: fp16", "precision: int8\n  calibration_cache: clipv-calib.cache")
    assert build(project).executed == {"engine:clipv", "repo:clipv", "repo:vlm"}
    argv = last_call(project, "clipv")
    assert argv[6:8] == ["--int8", "--calib=models/clipv-calib.cache"]
    calib.write_bytes(calib.read_bytes() + b"input.1: 3c020a14\n")
    assert build(project).executed == {"engine:clipv", "repo:clipv", "repo:vlm"}


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ("  precision: int8\n", "engine.calibration_cache: required when engine.precision is int8"),
        ("  precision: fp16\n  calibration_cache: x.cache\n", "engine.calibration_cache: only used with engine.precision int8 or best"),
        ("  precision: int8\n  calibration_cache: missing.cache\n", "engine.calibration_cache: no such file: models/missing.cache"),
        ("  max_seq_len: 16\n", "engine.max_seq_len: unknown key"),
    ],
)
def test_precision_mistakes_are_one_line_errors(tiny_clip_vision: Path, tmp_path: Path, engine: str, message: str) -> None:
    clip = CLIP_VISION_YAML.format(name="clipv", path=tiny_clip_vision).replace("  opt_batch_size: 4\n", engine)
    root = copy_project(tmp_path, {"clipv": clip})
    result = build(root, "list")
    assert result.rc != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ERROR: models/clipv.yaml: {message}")
