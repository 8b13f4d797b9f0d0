"""The test tiers: every test file sits in one, and the unit tier starts no process."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "e2e", "faults")
# What starts a process: doit in a project copy, a server, or a plain subprocess.
PROCESS_NAMES = {"run_doit", "doit_argv", "copy_project", "TritonServer", "subprocess", "Popen", "s3_server", "s3_env"}


def test_every_test_file_sits_in_a_tier() -> None:
    outside = sorted(p.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py") if p.parent.name not in TIERS)
    assert outside == []


def process_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        name = node.arg if isinstance(node, ast.arg) else name
        if isinstance(node, ast.alias):
            name = node.name.rpartition(".")[2]
        if name in PROCESS_NAMES:
            found.add(name)
    return found


@pytest.mark.parametrize("path", sorted((TESTS / "unit").glob("test_*.py")), ids=lambda p: p.name)
def test_a_unit_test_file_starts_no_process(path: Path) -> None:
    assert process_names(path) == set()


def test_a_planted_doit_run_is_found(tmp_path: Path) -> None:
    planted = tmp_path / "test_planted.py"
    planted.write_text("from tests.helpers import run_doit\n\ndef test_x(tmp_path):\n    run_doit(tmp_path, 'list')\n", encoding="utf-8")
    assert process_names(planted) == {"run_doit"}
