from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.runner import build_base


@pytest.fixture(scope="session")
def built_project(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with ``tiny`` built for target cpu, copied (never used in place) by every case."""
    return build_base(tmp_path_factory.mktemp("faults-base") / "p", tiny_bert)
