"""Seeded SIGKILL trials: a cold ``doit build`` killed (whole process group) at a random moment inside one stage.

The rerun must exit 0 with a repository and manifests byte-identical to a clean build, rebuild exactly the
stages that had not finished (a stage whose manifest existed at the kill is reused, never re-executed), leave no
``.tmp-`` work tree, and no process of either run may survive.  Trial ``s`` aims at stage ``s mod 5`` and waits a
delay drawn from ``random.Random(s)`` within that stage's duration in the reference build.  ``FAULT_TRIALS=<n>``
runs more (the nightly job runs 60).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.runner import case_env, reap, settle, survivors
from tests.helpers import TINY_YAML, DoitRun, copy_project, doit_argv, run_doit

TRIALS = int(os.environ.get("FAULT_TRIALS", "12"))
STAGES = ("fetch", "config", "export", "engine", "repo")
COMMAND = ("build:tiny", "target=cpu")
BUILT = re.compile(r"^(\w+):tiny: built in", re.MULTILINE)


TARGETED = frozenset({"config", "engine", "repo"})  # stages whose outputs are kept per target


def stage_dir(project: Path, stage: str) -> Path:
    return project / "build/tiny" / stage / ("cpu" if stage in TARGETED else "")


def manifest(project: Path, stage: str) -> Path:
    return stage_dir(project, stage) / "manifest.json"


def work_trees(project: Path) -> list[Path]:
    return [p for root in ("build", "repos") if (project / root).exists() for p in (project / root).rglob("*.tmp-*")]


def digests(project: Path) -> dict[str, str]:
    """Every file of the repository and every stage manifest, by content."""
    files = [p for p in (project / "repos/tiny").rglob("*") if p.is_file()] + [manifest(project, s) for s in STAGES]
    return {p.relative_to(project).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def start(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        doit_argv(*COMMAND),
        cwd=project,
        env=case_env(project),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, killed whole as a crash or an OOM kill would
    )


def work_tree_seen(project: Path, stage: str) -> bool:
    folder = stage_dir(project, stage)
    return folder.parent.exists() and bool(list(folder.parent.glob(f".{folder.name}.tmp-*")))


def stage_started(project: Path, stage: str, previous: str | None) -> bool:
    """Its work tree exists, or the stage before it has finished (short stages may never show a work tree)."""
    return work_tree_seen(project, stage) or previous is None or manifest(project, previous).exists()


@dataclass
class Reference:
    project: Path  # every trial runs at this same path: the exported ONNX records source paths
    digests: dict[str, str]
    order: list[str]  # stages in the order they finished
    spans: dict[str, float]  # seconds from a stage's start to its manifest


def watch(project: Path) -> tuple[int, list[str], dict[str, float]]:
    """Run a cold build to its end, timing each stage by its work tree and manifest."""
    proc = start(project)
    began = time.monotonic()
    seen: dict[str, float] = {}
    done: dict[str, float] = {}
    while True:
        ended = proc.poll() is not None  # one more look after the end, so the last manifest is seen
        now = time.monotonic() - began
        for stage in STAGES:
            if stage not in seen and work_tree_seen(project, stage):
                seen[stage] = now
            if stage not in done and manifest(project, stage).exists():
                done[stage] = now
        if ended:
            break
        time.sleep(0.005)
    order = sorted(done, key=done.__getitem__)
    starts = {s: seen.get(s, done[order[i - 1]] if i else 0.0) for i, s in enumerate(order)}
    return proc.wait(), order, {s: max(done[s] - starts[s], 0.05) for s in order}


@pytest.fixture(scope="module")
def reference(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    project = copy_project(tmp_path_factory.mktemp("kill-trials") / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})
    rc, order, spans = watch(project)
    assert rc == 0
    assert order[0] == "fetch", order
    assert set(order) == set(STAGES)
    return Reference(project, digests(project), order, spans)


@dataclass
class Kill:
    aimed: str
    delay: float
    done: dict[str, int]  # stage -> manifest mtime_ns for every stage finished when the kill landed
    left: list[int]


def kill_during(project: Path, ref: Reference, seed: int) -> Kill:
    rng = random.Random(seed)  # noqa: S311 - a reproducible test schedule, not a secret
    stage = STAGES[seed % len(STAGES)]
    index = ref.order.index(stage)
    previous = ref.order[index - 1] if index else None
    delay = rng.uniform(0, ref.spans[stage])
    proc = start(project)
    deadline = time.monotonic() + 600
    try:
        while not stage_started(project, stage, previous):
            assert proc.poll() is None, f"the build ended before {stage} started"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(delay)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = {s: manifest(project, s).stat().st_mtime_ns for s in STAGES if manifest(project, s).exists()}
    return Kill(stage, delay, done, settle(project))


def rebuilt(run: DoitRun) -> set[str]:
    return set(BUILT.findall(run.stderr))


@pytest.mark.parametrize("seed", range(TRIALS))
def test_a_killed_build_reruns_to_the_clean_result_without_rework(seed: int, reference: Reference, tiny_bert: Path) -> None:
    project = reference.project
    shutil.rmtree(project)
    copy_project(project, {"tiny": TINY_YAML.format(path=tiny_bert)})
    kill = kill_during(project, reference, seed)
    where = f"seed {seed}: killed {kill.delay:.2f} s into {kill.aimed}, finished then: {sorted(kill.done)}"
    try:
        assert kill.left == [], f"{where}: processes survived the kill: {kill.left}"
        rerun = run_doit(project, *COMMAND, env=case_env(project))
        after = settle(project)
    finally:
        reap(survivors(project))
    assert rerun.rc == 0, f"{where}\n{rerun.stdout}\n{rerun.stderr[-3000:]}"
    assert "Traceback" not in rerun.stdout + rerun.stderr, where
    assert digests(project) == reference.digests, where
    assert rebuilt(rerun) == set(STAGES) - set(kill.done), f"{where}\n{rerun.stderr[-2000:]}"
    assert {s: manifest(project, s).stat().st_mtime_ns for s in kill.done} == kill.done, where
    assert work_trees(project) == [], where
    assert after == [], f"{where}: processes left after the rerun: {after}"


def test_the_schedule_reaches_every_stage() -> None:
    """With the CI count every stage is aimed at, and the delays differ (seeded, not fixed)."""
    aimed = {STAGES[seed % len(STAGES)] for seed in range(12)}
    assert aimed == set(STAGES)
    delays = {random.Random(seed).uniform(0, 1) for seed in range(12)}  # noqa: S311
    assert len(delays) == 12
