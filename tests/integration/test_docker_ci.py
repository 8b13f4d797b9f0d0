"""docker/run.sh run against a recording fake ``docker``: the project mounted at its own path, a missing image built."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

RUN_SH = ROOT / "docker/run.sh"


# The image tag's suffix: what the image is built from, so a dependency change builds a new image.
IMAGE_INPUTS = hashlib.sha256((ROOT / "docker/Dockerfile").read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]


@pytest.fixture
def fake_docker(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A ``docker`` that records its argv; ``image inspect`` fails when FAKE_DOCKER_NO_IMAGE is set."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "docker"
    script.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        "open(os.environ['FAKE_DOCKER_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(1 if sys.argv[1:3] == ['image', 'inspect'] and os.environ.get('FAKE_DOCKER_NO_IMAGE') else 0)\n"
    )
    script.chmod(0o755)
    log = tmp_path / "docker.jsonl"
    env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "FAKE_DOCKER_LOG": str(log), "HF_HOME": str(tmp_path / "hf")}
    return env, log


def test_run_sh_mounts_the_project_at_the_same_path(fake_docker: tuple[dict[str, str], Path]) -> None:
    env, log = fake_docker
    done = subprocess.run(
        [str(RUN_SH), "--image", "plan", "doit", "build:minilm", "target=trt"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0] == ["image", "inspect", f"tritongraph-plan:26.05-{IMAGE_INPUTS}"]
    run = calls[1]
    assert run[:2] == ["run", "--rm"]
    assert f"{ROOT}:{ROOT}" in run
    assert run[run.index("--workdir") + 1] == str(ROOT)
    assert run[run.index("--gpus") + 1] == "all"
    assert run[-4:] == [f"tritongraph-plan:26.05-{IMAGE_INPUTS}", "doit", "build:minilm", "target=trt"]


def test_run_sh_builds_a_missing_image_from_the_pinned_tag(fake_docker: tuple[dict[str, str], Path]) -> None:
    env, log = fake_docker
    done = subprocess.run([str(RUN_SH), "true"], env={**env, "FAKE_DOCKER_NO_IMAGE": "1"}, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    build = [json.loads(line) for line in log.read_text().splitlines()][1]
    assert build[:3] == ["build", "--target", "trtllm"]
    assert build[build.index("--build-arg") + 1] == "TRITON_TAG=26.05"
    assert f"building tritongraph-trtllm:26.05-{IMAGE_INPUTS} (Triton 26.05, TensorRT-LLM 1.2.1, TensorRT 10.14.1.48)" in done.stderr


def test_run_sh_refuses_an_unknown_image() -> None:
    done = subprocess.run([str(RUN_SH), "--image", "gpu"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "docker/run.sh: --image: expected trtllm or plan, got 'gpu'"
