"""Target trt without a GPU: a fake trtexec on PATH (a test double) records the argv the product passes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.helpers import FAKES, TINY_YAML, copy_project, doit_env, read_json, run_doit

TRT_ENGINE = """\
engine:
  max_batch_size: 8
  max_seq_len: 32
  opt_batch_size: 4
  opt_seq_len: 16
  precision: fp16
  workspace_mb: 1024
  flags: {builderOptimizationLevel: 5, noTF32: true}
  extra_args: ["--verbose"]
"""
SHAPES = "input_ids:{0},attention_mask:{0},token_type_ids:{0}"


def trt_yaml(tiny_bert: Path, engine: str = TRT_ENGINE) -> str:
    base = TINY_YAML.format(path=tiny_bert)
    return base.replace("engine:\n  max_batch_size: 8\n  max_seq_len: 32\n", engine)


@pytest.fixture(scope="module")
def built(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = copy_project(tmp_path_factory.mktemp("trt"), {"tiny": trt_yaml(tiny_bert)})
    log = root / "trtexec-argv.jsonl"
    result = run_doit(root, "build:tiny", env=doit_env({"FAKE_TRTEXEC_LOG": str(log)}, path_prefix=FAKES))
    assert result.rc == 0, result.stdout + result.stderr
    assert "target: trt (auto: found" in result.stderr
    return root, log


def test_trtexec_gets_shapes_precision_and_validated_flags(built: tuple[Path, Path]) -> None:
    root, log = built
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 1
    argv = calls[0]
    assert argv[0] == "--onnx=build/tiny/export/model.onnx"
    assert argv[1].startswith("--saveEngine=build/tiny/engine/.trt.tmp-")
    assert argv[1].endswith("/model.plan")
    assert argv[-1].startswith("--timingCacheFile=build/tiny/timing-cache/.10.14.1-none-none.cache.tmp-")
    assert argv[2:-1] == [
        "--skipInference",
        "--minShapes=" + SHAPES.format("1x1"),
        "--optShapes=" + SHAPES.format("4x16"),
        "--maxShapes=" + SHAPES.format("8x32"),
        "--fp16",
        "--memPoolSize=workspace:1024M",
        "--builderOptimizationLevel=5",
        "--noTF32",
        "--verbose",
    ]
    record = read_json(root / "build/tiny/engine/trt/action.json")
    assert record["tensorrt"] == "10.14.1"
    assert read_json(root / "build/tiny/engine/trt/manifest.json")["target"] == "trt"


def test_repository_serves_the_plan_with_tensorrt_plan_platform(built: tuple[Path, Path]) -> None:
    root, _ = built
    encoder = root / "repos/tiny/tiny_encoder"
    config = text_format.Parse((encoder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan"
    assert config.max_batch_size == 8
    assert [i.name for i in config.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    plan = encoder / "1/model.plan"
    assert plan.read_bytes().startswith(b"FAKEPLAN")
    assert plan.stat().st_ino == (root / "build/tiny/engine/trt/model.plan").stat().st_ino
    assert not (encoder / "1/model.py").exists()


def test_new_tensorrt_version_rebuilds_engine_and_what_depends_on_it(built: tuple[Path, Path], tmp_path: Path) -> None:
    root, log = built
    newer = tmp_path / "trt-10.15"
    newer.mkdir()
    shutil.copy2(FAKES / "trtexec-help.txt", newer / "trtexec-help.txt")
    (newer / "trtexec").write_text((FAKES / "trtexec").read_text().replace('"101401"', '"101500"'))
    (newer / "trtexec").chmod(0o755)
    env = doit_env({"FAKE_TRTEXEC_LOG": str(log)}, path_prefix=newer)
    info = run_doit(root, "info", "engine:tiny", env=env)
    assert "toolchain.tensorrt: 10.14.1 -> 10.15.0" in info.stdout
    result = run_doit(root, "build:tiny", env=env)
    assert result.rc == 0, result.stderr
    assert result.executed == {"engine:tiny", "repo:tiny"}


def test_another_container_release_rebuilds_engine_and_repository_only(tiny_bert: Path, tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p", {"tiny": trt_yaml(tiny_bert)})
    env = doit_env({"FAKE_TRTEXEC_LOG": str(tmp_path / "argv.jsonl")}, path_prefix=FAKES)
    env.pop("NVIDIA_TRITON_SERVER_VERSION", None)
    assert run_doit(root, "build:tiny", env=env).rc == 0
    inside = {**env, "NVIDIA_TRITON_SERVER_VERSION": "26.05"}  # what the NGC images set
    assert "toolchain.container: none -> 26.05" in run_doit(root, "info", "engine:tiny", env=inside).stdout
    result = run_doit(root, "build:tiny", env=inside)
    assert result.rc == 0, result.stderr
    assert result.executed == {"engine:tiny", "repo:tiny"}
    assert read_json(root / "build/tiny/engine/trt/action.json")["params"]["toolchain"]["container"] == "26.05"  # type: ignore[index]


def test_failing_trtexec_shows_its_last_lines_and_keeps_the_repository(built: tuple[Path, Path]) -> None:
    root, _ = built
    before = (root / "repos/tiny/tiny_encoder/1/model.plan").read_bytes()
    yaml_path = root / "models/tiny.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("opt_seq_len: 16", "opt_seq_len: 8"))
    env = doit_env({"FAKE_TRTEXEC_FAIL": "1"}, path_prefix=FAKES)
    result = run_doit(root, "build:tiny", env=env)
    assert result.rc != 0
    assert "ERROR: engine:tiny: trtexec exited with status 1; last lines of build/tiny/logs/engine-trtexec.log" in result.stdout
    assert "While parsing node number 3 [Gather]" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert (root / "repos/tiny/tiny_encoder/1/model.plan").read_bytes() == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("{fooBar: 1}", "engine.flags.fooBar: not a trtexec flag in TensorRT 10.14"),
        ("{workspace: 1024}", "engine.flags.workspace: removed in TensorRT 10; use memPoolSize"),
        ("{maxBatch: 8}", "engine.flags.maxBatch: removed in TensorRT 10"),
        ("{saveEngine: x.plan}", "engine.flags.saveEngine: set by the engine stage"),
        ("{noTF32: 1}", "engine.flags.noTF32: is a switch: expected true or false, got 1"),
    ],
)
def test_bad_trtexec_flags_fail_before_any_build(tiny_bert: Path, tmp_path: Path, flags: str, message: str) -> None:
    engine = f"engine:\n  max_batch_size: 8\n  max_seq_len: 32\n  flags: {flags}\n"
    root = copy_project(tmp_path / "p", {"tiny": trt_yaml(tiny_bert, engine)})
    result = run_doit(root, "build:tiny", "target=trt", env=doit_env(path_prefix=FAKES))
    assert result.rc == 3
    assert result.stderr.strip().splitlines()[-1] == f"ERROR: models/tiny.yaml: {message}" or message in result.stderr
    assert message in result.stderr
    assert not (root / "build/tiny/engine").exists()


def test_missing_trtexec_on_target_trt_is_one_clear_line(tiny_bert: Path, tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})
    result = run_doit(root, "engine:tiny", "target=trt")
    assert result.rc != 0
    assert "ERROR: engine:tiny: trtexec not found on PATH (target trt)" in result.stdout


def test_repository_records_the_toolchain_and_a_new_tensorrt_rebuilds_engine_and_repo_only(tiny_bert: Path, tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p", {"tiny": trt_yaml(tiny_bert)})
    env = doit_env({"FAKE_TRTEXEC_LOG": str(tmp_path / "argv.jsonl")}, path_prefix=FAKES)
    assert run_doit(root, "build:tiny", env=env).rc == 0
    record = read_json(root / "repos/tiny/toolchain.json")
    assert record == {
        "target": "trt",
        "engines": {"tiny": {"tensorrt": "10.14.1", "gpu": "none", "compute_capability": "none", "container": "none"}},
    }
    # A new TensorRT is a new trtexec binary (its --help is read again): another copy of the double, reporting 10.15.0.
    upgraded = tmp_path / "tensorrt-10.15"
    upgraded.mkdir()
    shutil.copy(FAKES / "trtexec-help.txt", upgraded)
    (upgraded / "trtexec").write_text((FAKES / "trtexec").read_text().replace('"101401"', '"101500"'))
    (upgraded / "trtexec").chmod(0o755)
    newer = doit_env({"FAKE_TRTEXEC_LOG": str(tmp_path / "argv.jsonl")}, path_prefix=upgraded)
    result = run_doit(root, "build:tiny", env=newer)
    assert result.rc == 0, result.stdout + result.stderr
    assert result.executed == {"engine:tiny", "repo:tiny"}
    assert read_json(root / "repos/tiny/toolchain.json")["engines"] == {
        "tiny": {"tensorrt": "10.15.0", "gpu": "none", "compute_capability": "none", "container": "none"}
    }
    why = run_doit(root, "info", "engine:tiny", env=env)
    assert "toolchain.tensorrt: 10.15.0 -> 10.14.1" in why.stdout
