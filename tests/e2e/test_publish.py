"""publish against a real S3 server (SeaweedFS): the real Triton serves MiniLM straight from the store."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from tasks.commands import publish
from tasks.core import manifest
from tasks.core.store import Store
from tasks.triton.argv import prepare_backend_dir, server_command
from tasks.triton.launcher import TritonServer
from tasks.triton.processes import pick_free_ports
from tests.e2e.test_e2e_minilm import SENTENCES
from tests.helpers import copy_project, run_doit
from tests.s3server import S3Server
from tests.support.publish import publish_model


def embed(url: str) -> np.ndarray[Any, Any]:
    client = httpclient.InferenceServerClient(url)
    try:
        text = httpclient.InferInput("text", [len(SENTENCES), 1], "BYTES")
        text.set_data_from_numpy(np.array([[s.encode()] for s in SENTENCES], dtype=object))
        return np.asarray(client.infer("minilm", [text]).as_numpy("embedding"))
    finally:
        client.close()


def serve_from_store(repository: str, server: S3Server, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """tritonserver with --model-repository=s3://host:port/...; credentials only in its environment."""
    ports = pick_free_ports()
    argv, env = server_command(Path("unused"), "cpu", ports, prepare_backend_dir(root / "backends"))
    argv = [f"--model-repository={repository}" if a.startswith("--model-repository=") else a for a in argv]
    aws = server.env()
    env |= {k: aws[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")} | {"AWS_DEFAULT_REGION": aws["AWS_REGION"]}
    with (root / "triton-s3.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (root / "triton-s3.log").read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports.http}/v2/health/ready", timeout=1) as reply:
                if reply.status == 200:
                    return proc, f"127.0.0.1:{ports.http}"
        except OSError:
            time.sleep(0.5)


def test_triton_serves_minilm_from_the_store_with_the_local_embeddings(s3_server: S3Server, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "minilm")
    built = run_doit(project, "repo:minilm", "target=cpu")
    assert built.rc == 0, built.stdout + built.stderr
    url = publish_model(project, s3_server, "minilm", "target=cpu")
    files, dirs = manifest.scan(project / "repos/minilm")
    digest = publish.content_digest(files, dirs)
    assert url == f"s3://127.0.0.1:{s3_server.s3_port}/cache/tg/repos/minilm/{digest}"
    assert "minilm/1" in dirs  # the ensemble's empty version folder, kept by its marker
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3_server.env().items():
            env.setenv(key, value)
        keys = {o.key for o in Store(s3_server.url).list(f"repos/minilm/{digest}")}
    assert f"repos/minilm/{digest}/minilm/1/{publish.MARKER}" in keys
    assert keys == {f"repos/minilm/{digest}/{p}" for p in [*files, publish.INDEX, *(f"{d}/{publish.MARKER}" for d in dirs)]}
    again = publish_model(project, s3_server, "minilm", "target=cpu")
    assert again == url  # same content, same immutable prefix

    with TritonServer(project / "repos/minilm", "cpu", tmp_path / "triton-local.log") as local:
        expected = embed(local.http_url)
    proc, address = serve_from_store(url, s3_server, tmp_path)
    try:
        got = embed(address)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert got.shape == (len(SENTENCES), 384)
    np.testing.assert_array_equal(got, expected)
