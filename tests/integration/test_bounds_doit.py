"""Bounded model files through doit itself: exit 3, one short ERROR line, no traceback, nothing built.

The in-process table of cases is tests/unit/test_spec_bounds.py; these are the ones whose failure on
the command line was a traceback, a hang or a flood.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TINY_YAML, copy_project, run_doit

F = "models/tiny.yaml"
LONG = "a" * 5000
BOMB = ", ".join(
    ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 6)]
)
CASES = [
    ("max_batch_size: 8\n  max_seq_len", f"max_batch_size: [{BOMB}]\n  max_seq_len", f"{F}: anchors and aliases (&name / *name) expand"),
    ("triton:\n  max_batch_size: 8\n", "triton:\n  max_batch_size: 8\n  instance_count: 100000\n", f"{F}: triton.instance_count: expected"),
    ("triton:\n", "bench:\n  measurement_interval_ms: 2000000000\ntriton:\n", f"{F}: bench.measurement_interval_ms: expected"),
    ("max_batch_size: 8\n  max_seq_len", "max_batch_size: 100000000000000000000\n  max_seq_len", f"{F}: engine.max_batch_size: expected"),
    ("triton:\n", f"bench:\n  prompts: {LONG}\ntriton:\n", f"{F}: bench.prompts: expected at most 4096 characters"),
    (
        "triton:\n",
        (
            "sweep:\n  triton.instance_count: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
            "  triton.max_queue_delay_us: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n  engine.opt_batch_size: [1, 2, 3]\ntriton:\n"
        ),
        f"{F}: sweep: expands to 300 variants (10 x 10 x 3 values); at most 256",
    ),
]


@pytest.fixture
def project(tiny_bert: Path, tmp_path: Path) -> Path:
    return copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=tiny_bert)})


def assert_one_line(project: Path, expected: str) -> None:
    result = run_doit(project, "list", "target=cpu", timeout=120)
    assert result.rc == 3, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[:2000]
    assert lines[0].startswith(f"ERROR: {expected}"), lines[0][:400]
    assert len(lines[0]) <= 320, lines[0][:400]
    assert "Traceback" not in result.stderr
    assert not (project / "build/tiny").exists()


@pytest.mark.parametrize(("old", "new", "expected"), CASES, ids=[c[2].split(": ")[1][:30] for c in CASES])
def test_an_unbounded_value_is_one_short_line(project: Path, old: str, new: str, expected: str) -> None:
    path = project / F
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    assert_one_line(project, expected)


def test_a_long_source_path_is_one_line(project: Path) -> None:
    path = project / F
    text = path.read_text()
    start, end = text.index("  path: "), text.index("export:")
    path.write_text(f"{text[:start]}  path: {LONG}\n{text[end:]}")
    assert_one_line(project, f"{F}: source.path: expected at most 4096 characters, got 'aaaa")


def test_a_file_that_is_not_utf8_is_one_line(project: Path) -> None:
    path = project / F
    path.write_bytes(path.read_bytes().replace(b"kind: encoder", b"kind: encod\xe9r"))
    assert_one_line(project, f"{F}: line 2: not UTF-8 text (byte 0xe9 at offset 22); save the file as UTF-8")


def test_one_model_in_two_files_names_both(project: Path) -> None:
    (project / "models/tiny.yml").write_text((project / F).read_text())
    assert_one_line(project, f"{F}, models/tiny.yml: both define model tiny")


def test_an_upper_case_suffix_is_not_skipped(project: Path) -> None:
    (project / "models/OTHER.YAML").write_text((project / F).read_text().replace("name: tiny", "name: other"))
    assert_one_line(project, "models/OTHER.YAML: the suffix must be lower-case .yaml or .yml; rename it to OTHER.yaml")
