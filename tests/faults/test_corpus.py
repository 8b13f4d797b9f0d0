"""The hostile-input corpus: every case fails in one line naming file and key, and touches nothing else."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.faults.cases import BAD, BAD_YAML, Case
from tests.faults.corpus import CASES
from tests.faults.runner import MARK, changed, reap, run_case, snapshot, survivors


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(case: Case, built_project: Path, tmp_path: Path) -> None:
    outcome = run_case(case, built_project, tmp_path)
    assert outcome.problems() == [], outcome.report()


def test_the_base_project_is_not_changed_by_the_cases(built_project: Path, tmp_path: Path) -> None:
    """Cases run on copies: the shared base stays as built, so one case cannot set up the next."""
    before = snapshot(built_project)
    run_case(CASES[0], built_project, tmp_path)
    assert snapshot(built_project) == before


def test_a_sound_model_file_is_reported_as_accepted(built_project: Path, tmp_path: Path) -> None:
    """The judge can fail: a model file with nothing wrong exits 0, which the corpus counts as a problem."""
    sound = Case("sound", "control", "nothing", {BAD: BAD_YAML})
    outcome = run_case(sound, built_project, tmp_path)
    assert outcome.outcome == "accepted"
    assert outcome.problems() == ["exit 0 (accepted)"]


def test_an_edited_or_replaced_file_of_the_guarded_model_is_found(built_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "p"
    shutil.copytree(built_project, project, symlinks=True, copy_function=shutil.copy2)
    before = snapshot(project)
    edited, replaced = sorted((project / "repos/tiny").rglob("config.pbtxt"))[:2]
    edited.write_text(edited.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    copy = replaced.with_name("copy")
    shutil.copy2(replaced, copy)
    copy.replace(replaced)  # same bytes, another inode
    new = project / "build/tiny/new.txt"
    new.write_text("x", encoding="utf-8")
    rel = [p.relative_to(project).as_posix() for p in (edited, replaced, new)]
    assert changed(before, snapshot(project)) == sorted(rel)
    assert changed(before, snapshot(project), allow_new=True) == sorted(rel[:2])


def test_a_process_left_by_a_run_is_found_and_reaped(tmp_path: Path) -> None:
    orphan = subprocess.Popen(["sleep", "60"], env={**os.environ, MARK: str(tmp_path)}, start_new_session=True)
    try:
        assert survivors(tmp_path) == [orphan.pid]
        reap(survivors(tmp_path))
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert survivors(tmp_path) == []
    finally:
        orphan.kill()
        orphan.wait()
