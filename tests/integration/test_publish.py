"""publish / pull against a real S3 server (SeaweedFS): a trt LLM repository (fake trtllm-build) is pulled to a serving
path with its engine paths rewritten, and a corrupted object is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tasks.commands import publish
from tasks.core import hashing
from tasks.core.store import Store
from tests.decoder_fixtures import build_tiny_decoder
from tests.helpers import DECODER_YAML, FAKES, copy_project, doit_env, read_json, run_doit
from tests.s3server import S3Server
from tests.support.publish import publish_model, store_env


@pytest.fixture(scope="module")
def trt_llm(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny GPT-2 built on target trt with the fake trtllm-build, published; returns the project and the digest."""
    root = tmp_path_factory.mktemp("trt-llm")
    checkpoint = build_tiny_decoder("gpt2", root / "gpt2")
    project = copy_project(root / "build-node", {"tiny-gpt2": DECODER_YAML.format(name="tiny-gpt2", family="gpt2", path=checkpoint)})
    built = run_doit(project, "repo:tiny-gpt2", "target=trt", env=doit_env(path_prefix=FAKES))
    assert built.rc == 0, built.stdout + built.stderr
    url = publish_model(project, s3_server, "tiny-gpt2", "target=trt", path_prefix=FAKES)
    return project, url.rsplit("/", 1)[1]


def engine_path(repository: Path) -> str:
    config = text_format.Parse((repository / "tensorrt_llm/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return str(config.parameters["gpt_model_path"].string_value)


def pull(server: S3Server, project: Path, dest: Path) -> Any:
    """``pull:tiny-gpt2`` run on a serving node: another checkout with nothing built."""
    node = dest.parent / "node"
    if not node.exists():
        copy_project(node, {"tiny-gpt2": (project / "models/tiny-gpt2.yaml").read_text()})
    return run_doit(node, "pull:tiny-gpt2", f"dest={dest}", "target=trt", env=store_env(server))


def test_pulled_trt_llm_configs_point_at_the_pulled_engines(s3_server: S3Server, trt_llm: tuple[Path, str], tmp_path: Path) -> None:
    project, digest = trt_llm
    dest = tmp_path / "models/tiny-gpt2"
    result = pull(s3_server, project, dest)
    assert result.rc == 0, result.stdout + result.stderr
    assert f"--model-repository={dest}" in result.stdout
    built = project / "repos/tiny-gpt2"
    assert engine_path(built) == str((built / "tensorrt_llm/1/engine").resolve())
    assert engine_path(dest) == str(dest / "tensorrt_llm/1/engine")
    engines = sorted(p.relative_to(built) for p in (built / "tensorrt_llm/1/engine").rglob("*") if p.is_file())
    assert engines
    for rel in engines:
        assert hashing.sha256_file(dest / rel) == hashing.sha256_file(built / rel)
    assert not any(str(built.resolve()) in p.read_text() for p in dest.rglob("config.pbtxt"))
    facts = read_json(dest / "pulled.json")
    assert facts["digest"] == digest
    rewritten = facts["rewritten_configs"]
    assert isinstance(rewritten, int)
    assert rewritten >= 1

    again = pull(s3_server, project, dest)
    assert again.rc == 0, again.stdout + again.stderr
    # only the rewritten configs differ from the store; every other file is linked from the previous pull
    assert read_json(dest / "pulled.json")["downloaded_files"] == rewritten


def test_a_corrupted_object_is_refused_and_the_previous_pull_stays(
    s3_server: S3Server, trt_llm: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, digest = trt_llm
    dest = tmp_path / "models/tiny-gpt2"
    assert pull(s3_server, project, dest).rc == 0
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    store = Store(s3_server.url)
    index = json.loads(store.get_bytes(f"repos/tiny-gpt2/{digest}/{publish.INDEX}") or b"{}")
    rel = next(r for r in index["files"] if r.startswith("tensorrt_llm/1/engine/"))
    original = store.get_bytes(f"repos/tiny-gpt2/{digest}/{rel}")
    assert original is not None
    store.put_bytes(f"repos/tiny-gpt2/{digest}/{rel}", original + b"tampered")
    try:
        (dest / rel).unlink()  # not reusable locally: it must come from the store
        (dest / rel).write_bytes(b"local damage")
        result = pull(s3_server, project, dest)
    finally:
        store.put_bytes(f"repos/tiny-gpt2/{digest}/{rel}", original)
    assert result.rc != 0
    assert f"{rel} is missing or does not match its sha256; refused" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    after = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == {**before, Path(rel): b"local damage"}  # nothing swapped in
