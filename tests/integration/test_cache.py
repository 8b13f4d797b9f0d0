"""The artifact cache against a real S3 server (SeaweedFS), with real doit runs in checkouts at different paths."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.core import cache, hashing, manifest
from tasks.core.stage import Stage, StageContext, _build, action_key, input_digests
from tasks.core.store import Store
from tests.helpers import DECODER_YAML, FAKES, ROOT, DoitRun, copy_project, doit_env, run_doit
from tests.s3server import SECRET_KEY, S3Server, free_ports, running_s3

LLM = DECODER_YAML.format(name="tiny-llama", family="llama", path="{path}")
SHARED_STAGES = ("export:", "convert:", "engine:")


class CountingProxy:
    """A loopback TCP forwarder in front of the store that counts the connections clients open."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        # A peer that goes away ends the pipe; both directions are shut down either way.
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def proxy(s3_server: S3Server) -> Iterator[CountingProxy]:
    counting = CountingProxy(s3_server.s3_port)
    yield counting
    counting.close()


def _minilm() -> str:
    text = (ROOT / "models/minilm.yaml").read_text()
    return text[: text.index("\nbench:")] + "\n"  # no benchmark: a measurement is never cached


def _models(llama: Path, *, minilm: bool) -> dict[str, str]:
    models = {"tiny-llama": LLM.format(path=llama)}
    if minilm:
        models["minilm"] = _minilm()
    return models


def _env(server: S3Server, url: str, mode: str, *, endpoint: str | None = None, trt_log: Path | None = None) -> dict[str, str]:
    extra = {**server.env(endpoint), cache.URL_ENV: url, cache.MODE_ENV: mode}
    if trt_log is not None:
        extra["FAKE_TRTLLM_LOG"] = str(trt_log)
    return doit_env(extra, path_prefix=FAKES if trt_log is not None else None)


def _records(project: Path) -> dict[str, dict[str, object]]:
    found = {}
    for path in sorted((project / "build").glob(f"*/*/{manifest.RECORD}")):
        record = json.loads(path.read_text())
        found[str(record["task"])] = record
    return found


def _assert_same_repos(a: Path, b: Path) -> None:
    """repos/ of two checkouts: the same files, byte for byte, except each one's own absolute repository root."""
    files_a = sorted(p.relative_to(a) for p in (a / "repos").rglob("*"))
    assert files_a == sorted(p.relative_to(b) for p in (b / "repos").rglob("*"))
    for rel in files_a:
        if (a / rel).is_dir():
            continue
        left, right = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel.name == "config.pbtxt":
            left = left.replace(str(a.resolve()).encode(), b"<root>")
            right = right.replace(str(b.resolve()).encode(), b"<root>")
        assert hashing.sha256_file(a / rel) == hashing.sha256_file(b / rel) or left == right, rel


def _timed(project: Path, *args: str, env: dict[str, str]) -> tuple[DoitRun, float]:
    started = time.monotonic()
    result = run_doit(project, *args, env=env)
    assert result.rc == 0, result.stdout + result.stderr
    return result, time.monotonic() - started


@pytest.mark.parametrize("target", ["cpu", "trt"])
def test_second_checkout_builds_from_the_cache_and_noop_never_calls_the_store(
    target: str, s3_server: S3Server, proxy: CountingProxy, llama: Path, tmp_path: Path
) -> None:
    url = f"{s3_server.url}/full-{target}"
    trt_log = {"a": tmp_path / "a-trtllm.jsonl", "b": tmp_path / "b-trtllm.jsonl"} if target == "trt" else {}
    models = _models(llama, minilm=target == "cpu")
    a = copy_project(tmp_path / "a", models)
    b = copy_project(tmp_path / "somewhere" / "else" / "b", models)
    env_a = _env(s3_server, url, "rw", endpoint=f"http://127.0.0.1:{proxy.port}", trt_log=trt_log.get("a"))
    cold, cold_s = _timed(a, "build", f"target={target}", env=env_a)
    assert not any("from_cache" in r for r in _records(a).values())

    before = proxy.connections
    noop, _ = _timed(a, "build", f"target={target}", env=env_a)
    assert noop.executed == set()
    assert proxy.connections == before  # an up-to-date no-op makes no request at all

    hit, hit_s = _timed(b, "build", f"target={target}", env=_env(s3_server, url, "ro", trt_log=trt_log.get("b")))
    print(f"{target}: cold build {cold_s:.1f} s, full-hit build {hit_s:.1f} s")
    shared = {name: r for name, r in _records(b).items() if name.startswith(SHARED_STAGES)}
    assert shared
    assert all(r.get("from_cache") == url for r in shared.values()), shared
    assert {n: r["key"] for n, r in shared.items()} == {n: r["key"] for n, r in _records(a).items() if n in shared}
    if target == "trt":
        assert trt_log["a"].read_text().strip()
        assert not trt_log["b"].exists()  # no trtllm-build ran in checkout b
    _assert_same_repos(a, b)
    for project, runs in ((a, (cold, noop)), (b, (hit,))):
        _assert_no_secret(project, runs)


def _assert_no_secret(project: Path, runs: tuple[DoitRun, ...]) -> None:
    for run in runs:
        assert SECRET_KEY not in run.stdout + run.stderr
    for folder in ("build", "repos", "results"):
        for path in (project / folder).rglob("*"):
            if path.is_file() and not path.name.endswith(".sqlite"):
                assert SECRET_KEY.encode() not in path.read_bytes(), path


def test_store_down_builds_locally_with_one_warning(s3_server: S3Server, llama: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p", _models(llama, minilm=False))
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    started = time.monotonic()
    result = run_doit(project, "build", "target=cpu", env=_env(s3_server, s3_server.url, "rw", endpoint=closed))
    assert result.rc == 0, result.stdout + result.stderr
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "unavailable" in line]
    assert len(warnings) == 1, warnings
    assert "convert:tiny-llama" in result.executed
    assert time.monotonic() - started < 120


def test_store_stopped_mid_build_finishes_locally_with_one_warning(tmp_path: Path) -> None:
    """The real server goes away while MiniLM's export runs: its upload and every later lookup fail over to local."""
    project = copy_project(tmp_path / "p", {"minilm": _minilm()})
    with running_s3(tmp_path / "weed") as server:
        env = {**_env(server, server.url, "rw"), "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "doit", "build:minilm", "target=cpu"]
        build = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert build.stdout is not None
        lines = []
        for line in build.stdout:
            lines.append(line)
            if line.startswith(".  export:minilm"):
                break  # the export takes seconds: the server stops while it runs, before its upload
        server.stop()
        lines += build.stdout.readlines()
        rc = build.wait(timeout=300)
    output = "".join(lines)
    assert rc == 0, output
    warnings = [line for line in output.splitlines() if "unavailable" in line]
    assert len(warnings) == 1, warnings
    assert {"export:minilm", "engine:minilm", "repo:minilm"} <= {line[3:].strip() for line in lines if line.startswith(".  ")}
    assert not any("from_cache" in record for record in _records(project).values())
    assert (project / "repos/minilm/minilm_encoder/1/model.onnx").is_file()


# ---- the protocol driven in-process against the real server --------------------------------


def _stage(payload: bytes, runs: list[bytes] | None = None, fingerprint: dict[str, str] | None = None) -> Stage:
    def action(ctx: StageContext) -> None:
        (ctx.out / "engine.plan").write_bytes(payload)
        if runs is not None:
            runs.append(payload)

    live = (lambda: fingerprint) if fingerprint is not None else None
    params = {"engine": {"fp16": True}, "toolchain": {"gpu": "A100"}}
    return Stage("engine", "m", params, Path("build/m/engine"), action, "test", target="trt", cached=True, fingerprint=live)


@pytest.fixture
def in_s3(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Store]:
    monkeypatch.chdir(tmp_path)
    hashing.configure(tmp_path / "digests.sqlite")
    url = f"{s3_env.url}/{request.node.name}"
    cache.configure(cache.Settings(url, "rw"))
    yield Store(url)
    cache.configure(cache.Settings())


def _blob_and_key(store: Store, stage: Stage) -> tuple[str, str]:
    key = action_key(stage, input_digests(stage))
    entry = json.loads(store.get_bytes(f"ac/{key}") or b"")
    return entry["manifest"]["files"]["engine.plan"]["sha256"], key


def test_a_blob_corrupted_in_s3_is_refused_and_rebuilt(in_s3: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs: list[bytes] = []
    stage = _stage(b"plan bytes", runs)
    _build(stage)
    digest, _ = _blob_and_key(in_s3, stage)
    in_s3.delete(f"cas/{digest}")
    (tmp_path / "bad").write_bytes(b"plan bytez")
    in_s3.put_file(f"cas/{digest}", tmp_path / "bad")
    shutil.rmtree(stage.out_dir)
    with caplog.at_level(logging.WARNING):
        _build(stage)
    assert runs == [b"plan bytes", b"plan bytes"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "sha256" in warnings[0]


def test_blobs_without_an_entry_are_a_miss(in_s3: Store) -> None:
    runs: list[bytes] = []
    stage = _stage(b"plan", runs)
    _build(stage)
    _, key = _blob_and_key(in_s3, stage)
    in_s3.delete(f"ac/{key}")  # the uploader was killed between its blobs and its entry
    shutil.rmtree(stage.out_dir)
    _build(stage)
    assert runs == [b"plan", b"plan"]
    assert in_s3.exists(f"ac/{key}")


def test_a_foreign_toolchain_is_never_uploaded(in_s3: Store, caplog: pytest.LogCaptureFixture) -> None:
    stage = _stage(b"plan", fingerprint={"gpu": "H100"})
    with caplog.at_level(logging.WARNING):
        _build(stage)
    assert in_s3.list("ac") == []
    assert in_s3.list("cas") == []
    assert ["gpu" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [True]


RACER = """
import sys, time
from pathlib import Path
from tasks.core import cache, hashing
from tasks.core.stage import Stage, _build

me, url, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
hashing.configure(Path("digests.sqlite"))
cache.configure(cache.Settings(url, "rw"))

def action(ctx):
    # Both racers have missed the lookup before either writes: each waits for the other here.
    (gate / me).touch()
    while len(list(gate.iterdir())) < 2:
        time.sleep(0.05)
    (ctx.out / "engine.plan").write_bytes(f"plan built by {me}".encode())

_build(Stage("engine", "m", {"engine": {"fp16": True}}, Path("build/m/engine"), action, "race", cached=True))
"""


def test_two_racing_builders_end_with_the_winners_bytes(s3_env: S3Server, tmp_path: Path) -> None:
    url = f"{s3_env.url}/race"
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**os.environ, **s3_env.env(), "PYTHONPATH": str(ROOT)}
    racers = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        argv = [sys.executable, "-c", RACER, name, url, str(gate)]
        racers.append(subprocess.Popen(argv, cwd=tmp_path / name, env=env))
    assert [p.wait(timeout=120) for p in racers] == [0, 0]
    store = Store(url)
    assert len(store.list("ac")) == 1
    plans = {(tmp_path / name / "build/m/engine/engine.plan").read_bytes() for name in ("one", "two")}
    assert len(plans) == 1
    entry = json.loads(store.get_bytes(store.list("ac")[0].key) or b"")
    assert hashing.sha256_file(tmp_path / "one/build/m/engine/engine.plan") == entry["manifest"]["files"]["engine.plan"]["sha256"]
