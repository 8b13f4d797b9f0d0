from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import build_tiny_bert, build_tiny_clip_text, build_tiny_clip_vision


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
