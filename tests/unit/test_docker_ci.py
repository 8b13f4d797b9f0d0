"""The pinned images, docker/run.sh and the nightly workflow, checked for structure (no docker, hadolint or actionlint here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.core.errors import UserError
from tasks.tools import trtexec, trtllm, versions
from tests.helpers import ROOT

DOCKERFILE = ROOT / "docker/Dockerfile"
RUN_SH = ROOT / "docker/run.sh"
WORKFLOW = ROOT / ".github/workflows/nightly.yml"
INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "LABEL", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "SHELL"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", path.read_text())
    pairs = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            pairs.append((word, rest))
    return pairs


def test_one_versions_file_pins_the_image_and_picks_the_flag_tables() -> None:
    pinned = versions.pinned()
    assert pinned == {"TRITON_TAG": "26.05", "TRTLLM_VERSION": "1.2.1", "TENSORRT_VERSION": "10.14.1.48"}
    assert trtllm.static_table().version == trtllm.PINNED_VERSION == pinned["TRTLLM_VERSION"]
    assert trtexec.static_table().version == trtexec.PINNED_VERSION == "10.14"


def test_a_broken_versions_file_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="line 2: expected KEY=VALUE, got 'TRITON_TAG'"):
        versions.parse("# pins\nTRITON_TAG\n", "docker/versions.env")
    with pytest.raises(UserError, match="missing TRTLLM_VERSION, TENSORRT_VERSION"):
        versions.parse("TRITON_TAG=26.05\n", "docker/versions.env")


def test_dockerfile_builds_both_images_from_the_pinned_tag() -> None:
    steps = instructions(DOCKERFILE)
    assert all(word in INSTRUCTIONS for word, _ in steps), [w for w, _ in steps if w not in INSTRUCTIONS]
    assert steps[0] == ("ARG", f"TRITON_TAG={versions.pinned()['TRITON_TAG']}")  # the default equals the pin
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms == [
        "nvcr.io/nvidia/tensorrt:${TRITON_TAG}-py3 AS tensorrt",
        "nvcr.io/nvidia/tritonserver:${TRITON_TAG}-trtllm-python-py3 AS trtllm",
        "nvcr.io/nvidia/tritonserver:${TRITON_TAG}-py3 AS plan",
    ]
    runs = [rest for word, rest in steps if word == "RUN"]
    assert runs
    assert all("pip install --no-cache-dir" in run for run in runs)
    assert ("COPY", "--from=tensorrt /usr/src/tensorrt/bin/trtexec /usr/local/bin/trtexec") in steps
    assert "latest" not in DOCKERFILE.read_text()
    assert not any(word == "ADD" for word, _ in steps)


def _workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    data["on"] = data.pop(True)  # YAML 1.1 reads the key "on" as true
    return data


def test_nightly_runs_the_cpu_suite_and_plans_gpu_jobs_from_the_cache() -> None:
    flow = _workflow()
    assert flow["on"]["schedule"][0]["cron"]
    assert "workflow_dispatch" in flow["on"]
    jobs = flow["jobs"]
    assert set(jobs) == {"cpu", "faults", "conformance", "plan", "gpu", "vlm"}
    assert jobs["cpu"]["timeout-minutes"] <= 90
    assert "FAULT_TRIALS" not in jobs["cpu"].get("env", {})  # .ci/run's 12 trials keep the cpu job inside its limit
    assert int(jobs["faults"]["env"]["FAULT_TRIALS"]) > 12
    assert "tests/faults/test_kill_trials.py" in jobs["faults"]["steps"][-1]["run"]
    assert any(step.get("run") == "bash .ci/run" for step in jobs["cpu"]["steps"])
    plan = jobs["plan"]
    assert not any("self-hosted" in str(label) for label in [plan["runs-on"]])  # planning needs no GPU
    run = next(s["run"] for s in plan["steps"] if "doit plan" in s.get("run", ""))
    assert run.split()[:3] == ["doit", "plan", "target=trt"]
    assert " json=plan.json" in run
    assert " toolchain_id=${{ steps.toolchain.outputs.id }} " in run
    assert "hashFiles('docker/versions.env', 'docker/Dockerfile', 'pyproject.toml')" in WORKFLOW.read_text()
    assert plan["outputs"]["matrix"] == "${{ steps.matrix.outputs.matrix }}"
    assert "jq -c .matrix plan.json" in next(s["run"] for s in plan["steps"] if s.get("id") == "matrix")


def test_gpu_jobs_take_their_matrix_from_the_plan_and_write_the_cache() -> None:
    flow = _workflow()
    gpu, vlm = flow["jobs"]["gpu"], flow["jobs"]["vlm"]
    assert "plan" in gpu["needs"]
    assert gpu["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert gpu["strategy"]["fail-fast"] is False
    assert "needs.plan.outputs.builds != '0'" in gpu["if"]  # a night with everything cached starts no GPU job
    assert {"self-hosted", "gpu", "${{ matrix.platform }}"} <= set(gpu["runs-on"])
    build = next(s for s in gpu["steps"] if "doit build:" in s.get("run", ""))
    assert build["run"] == "docker/run.sh --image ${{ matrix.image }} doit build:${{ matrix.model }} target=trt cache_mode=rw"
    assert "if" not in build  # a failed task fails the job
    record = next(s for s in gpu["steps"] if "doit platform" in s.get("run", ""))
    assert " image=${{ matrix.image }}" in record["run"]
    assert " platform=${{ matrix.platform }}" in record["run"]
    upload = next(s for s in gpu["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "results/" in upload["with"]["path"].split()
    # ensembles run after the member jobs and restore the members from the cache
    assert vlm["needs"] == ["plan", "gpu"]
    assert vlm["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.ensembles) }}"
    assert "!cancelled()" in vlm["if"]
    assert any("cache_mode=rw" in s.get("run", "") for s in vlm["steps"])
    for job in flow["jobs"].values():
        uses = [s["uses"] for s in job["steps"] if "uses" in s]
        assert all(re.fullmatch(r"[\w-]+/[\w/-]+@v\d+", u) for u in uses), uses
        assert not any(u.startswith("actions/cache") for u in uses)  # build/ is never carried by actions/cache


def test_store_settings_come_from_secrets_and_reach_the_image_by_name_only() -> None:
    flow = _workflow()
    assert flow["env"]["TRITONGRAPH_CACHE"] == "${{ secrets.TRITONGRAPH_CACHE }}"
    assert flow["env"]["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    assert flow["env"]["TRITONGRAPH_CACHE_FETCH"] == "1"  # fetch cached too, so a fresh runner's plan can chain keys
    assert "secrets." not in "".join(s.get("run", "") for job in flow["jobs"].values() for s in job["steps"])
    passed = re.findall(r"--env (\w+)\b(?!=)", RUN_SH.read_text())
    assert {"TRITONGRAPH_CACHE", "TRITONGRAPH_CACHE_MODE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(passed)


def test_plan_json_feeds_the_workflow_matrix_shape() -> None:
    from tasks.commands.plan import matrix

    plans = [
        {"model": "minilm", "kind": "encoder", "image": "plan", "platform": "l4", "all_cached": False},
        {"model": "flan-t5", "kind": "llm", "image": "trtllm", "platform": "l4", "all_cached": True},
        {"model": "vlm", "kind": "ensemble", "image": "plan", "platform": "l4", "all_cached": False},
    ]
    assert matrix(plans, ensembles=False) == {"include": [{"model": "minilm", "image": "plan", "platform": "l4"}]}
    assert matrix(plans, ensembles=True) == {"include": [{"model": "vlm", "image": "plan", "platform": "l4"}]}
    shipped = {p.stem: yaml.safe_load(p.read_text())["kind"] for p in (ROOT / "models").glob("*.yaml")}
    from tasks.commands.platforms import image_of

    for model, kind in shipped.items():
        assert image_of(kind) == ("trtllm" if kind == "llm" else "plan"), model


def test_nightly_runs_the_conformance_kit_first_in_both_images() -> None:
    flow = _workflow()
    job = flow["jobs"]["conformance"]
    assert {"self-hosted", "gpu"} <= set(job["runs-on"])
    assert job["timeout-minutes"] <= 30  # the kit is budgeted at 10 minutes on one GPU
    runs = [s for s in job["steps"] if "run" in s]
    assert [s["run"] for s in runs] == [
        "docker/run.sh --image trtllm doit conformance target=trt models=llm",
        "docker/run.sh --image plan doit conformance target=trt models=encoders",
    ]
    assert "if" not in runs[0]
    assert runs[1]["if"] == "${{ !cancelled() }}"  # the encoders' half reports even when the LLMs' half failed
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert upload["with"]["path"].split() == ["results/conformance/", "build/conformance/logs/"]
    gpu = flow["jobs"]["gpu"]
    assert gpu["needs"] == ["plan", "conformance"]  # the engines of the shipped models are built after the kit ran
    assert gpu["if"].startswith("${{ !cancelled() &&")  # and still built when it failed


def test_both_images_carry_the_cpu_target_for_the_conformance_kit() -> None:
    runs = [rest for word, rest in instructions(DOCKERFILE) if word == "RUN"]
    assert len(runs) == 2
    assert all('-e ".[cpu]"' in run for run in runs)  # pytriton's tritonserver serves the cpu side of each comparison
