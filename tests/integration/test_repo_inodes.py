"""Nothing written into ``repos/`` or ``build/`` reaches a file the user owns, and the next build undoes it.

The checkpoint is a private copy of tiny BERT in ``ckpts/ck`` (a ``pip:`` source is a folder like
this one, inside site-packages).  We run as root, so file modes stop no write: what protects the
source is that no file of ``build/<m>/fetch`` or ``repos/<m>`` shares its inode.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
from pathlib import Path

import pytest

from tests.helpers import TINY_YAML, copy_project, run_doit

TOKENIZER_CONFIG = "repos/tiny/tiny_tokenizer/1/tokenizer_config.json"
ONNX = "repos/tiny/tiny_encoder/1/model.onnx"
# Rewritten by every run of a stage (timings, logs); every other file must come back byte for byte.
CHANGING = {"action.json"}


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def outputs(project: Path) -> dict[str, str]:
    """Digests of build/tiny's stage outputs (not the logs and action records a rerun rewrites)."""
    found = digests(project / "build/tiny")
    return {rel: d for rel, d in found.items() if Path(rel).name not in CHANGING and not rel.startswith("logs/")}


@pytest.fixture
def source(tiny_bert: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ckpts" / "ck"
    shutil.copytree(tiny_bert, folder)
    return folder


@pytest.fixture
def project(source: Path, tmp_path: Path) -> Path:
    root = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=source)})
    first = run_doit(root, "build:tiny", "target=cpu")
    assert first.rc == 0, first.stdout + first.stderr
    return root


def build(project: Path) -> set[str]:
    result = run_doit(project, "build:tiny", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    return result.executed


def test_appending_to_a_repository_file_leaves_source_and_build_alone(project: Path, source: Path) -> None:
    source_before, build_before = digests(source), digests(project / "build/tiny")
    edited = project / TOKENIZER_CONFIG
    original = edited.read_bytes()
    with edited.open("a", encoding="utf-8") as handle:
        handle.write('\n{"edited": true}\n')
    with edited.open("r+b") as handle:
        handle.write(b"#")
    assert digests(source) == source_before
    assert digests(project / "build/tiny") == build_before
    assert build(project) == {"repo:tiny"}
    assert edited.read_bytes() == original
    assert digests(source) == source_before


def test_a_write_through_a_linked_artifact_is_undone_by_the_next_build(project: Path, source: Path) -> None:
    onnx = project / ONNX
    engine_onnx = project / "build/tiny/engine/cpu/model.onnx"
    # The one inode repos/ shares is a build output, and no user but root may write to it.
    assert onnx.stat().st_ino == engine_onnx.stat().st_ino
    assert stat.S_IMODE(onnx.stat().st_mode) & 0o222 == 0
    source_before, build_before, original = digests(source), outputs(project), onnx.read_bytes()
    with onnx.open("r+b") as handle:  # root writes anyway, in place
        handle.seek(len(original) // 2)
        handle.write(b"\0" * 64)
    assert digests(source) == source_before
    executed = build(project)
    assert {"engine:tiny", "repo:tiny"} <= executed
    assert onnx.read_bytes() == original
    assert outputs(project) == build_before
    assert onnx.stat().st_ino == engine_onnx.stat().st_ino  # still one copy on disk
    assert digests(source) == source_before


def test_no_fetched_or_served_file_shares_an_inode_with_the_source(project: Path, source: Path) -> None:
    owned = {(p.stat().st_dev, p.stat().st_ino): p for p in source.rglob("*") if p.is_file()}
    ours = [p for folder in ("repos/tiny", "build/tiny/fetch") for p in (project / folder).rglob("*") if p.is_file()]
    assert len(ours) > len(owned)
    shared = {str(p): str(owned[key]) for p in ours if (key := (p.stat().st_dev, p.stat().st_ino)) in owned}
    assert shared == {}
    # Editable repository files are copies even of build/ outputs; only artifacts are linked.
    tokenizer = project / TOKENIZER_CONFIG
    assert tokenizer.stat().st_ino != (project / "build/tiny/fetch/tokenizer_config.json").stat().st_ino


@pytest.mark.parametrize("target", ["outside", "missing"])
def test_a_symlink_leading_out_of_the_checkpoint_is_refused_in_one_line(source: Path, tmp_path: Path, target: str) -> None:
    outside = tmp_path / "elsewhere" / "secret.txt"
    if target == "outside":
        outside.parent.mkdir()
        outside.write_text("not part of the checkpoint")
    link = source / "notes.txt"
    link.symlink_to(outside)
    project = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=source)})
    result = run_doit(project, "fetch:tiny", "target=cpu")
    assert result.rc != 0
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, result.stdout
    assert errors[0].startswith(f"ERROR: fetch:tiny: {link} is a symlink to {outside}")
    assert "Traceback" not in result.stdout + result.stderr
    assert not (project / "build/tiny/fetch").exists()


def test_a_symlink_inside_the_checkpoint_is_fetched_as_a_file(source: Path, tmp_path: Path) -> None:
    (source / "docs").mkdir()
    (source / "docs" / "card.md").write_text("a model card")
    (source / "README.md").symlink_to(Path("docs") / "card.md")
    project = copy_project(tmp_path / "p", {"tiny": TINY_YAML.format(path=source)})
    result = run_doit(project, "fetch:tiny", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    fetched = project / "build/tiny/fetch/README.md"
    assert not fetched.is_symlink()
    assert fetched.read_text() == "a model card"
    assert fetched.stat().st_ino != (source / "docs" / "card.md").stat().st_ino
