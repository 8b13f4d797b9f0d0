"""TritonServer for engines with world size > 1 starts through a recording mpirun, and refuses engines of another toolchain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.tools import toolchain
from tasks.triton.argv import Ports, ServerError
from tasks.triton.launcher import TritonServer
from tasks.triton.ranks import Ranks
from tests.support.launch import BUILT


def test_trt_server_of_a_two_rank_engine_starts_through_mpirun(fake_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "gpu_count", lambda: 2)
    server = TritonServer(tmp_path / "repo", "trt", tmp_path / "server.log", ports=Ports(18000, 18001, 18002), ranks=Ranks(2))
    with pytest.raises(ServerError, match="exited with code 1 before becoming ready"):
        server.start()
    recorded = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]
    assert recorded[0][0] == str(fake_bin / "mpirun")
    assert recorded[0].count("-n") == 2
    assert "mpirun" in (tmp_path / "server.log").read_text()


# --- engines built for another toolchain are refused before the server starts ----------------------------


def test_a_trt_server_refuses_a_repository_built_by_another_tensorrt_llm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.triton import compat
    from tasks.triton.compat import check_repository_toolchain

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "toolchain.json").write_text(json.dumps({"target": "trt", "engines": {"llama": BUILT}}))
    check_repository_toolchain(repo, lambda: dict(BUILT))  # the same toolchain: served
    monkeypatch.setattr(compat, "running_toolchain", lambda: {**BUILT, "tensorrt_llm": "1.3.0"})
    server = TritonServer(repo, "trt", tmp_path / "server.log", ports=Ports(18010, 18011, 18012))
    message = (
        r"the engines of llama were built for another toolchain: TensorRT-LLM 1\.2\.1 \(built\) vs 1\.3\.0 \(here\); rebuild them here"
    )
    with pytest.raises(ServerError, match=message):
        server.start()  # refused before any process starts
    assert not (tmp_path / "server.log").exists()
