"""tasks.triton.launcher against the real CPU tritonserver from nvidia-pytriton: serving, errors with the log tail, ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenizers
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tasks.triton import launcher, processes, runs
from tasks.triton.argv import Ports, ServerError
from tasks.triton.launcher import TritonServer
from tasks.triton.processes import live_stub_pids
from tests.helpers import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

ECHO_CONFIG = """\
name: "echo"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

ECHO_MODEL = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", data)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""

VENV_CONFIG = """\
name: "venv"
backend: "python"
max_batch_size: 8
input [ { name: "DUMMY" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "INFO" data_type: TYPE_STRING dims: [ 3 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

# numpy and tokenizers exist only in the venv, not in the system Python the stub links.
VENV_MODEL = """\
import sys

import numpy as np
import tokenizers
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))

    def execute(self, requests):
        info = [sys.prefix, np.__version__, tokenizers.__version__]
        responses = []
        for request in requests:
            batch = pb_utils.get_input_tensor_by_name(request, "DUMMY").as_numpy().shape[0]
            out = np.array([info] * batch, dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("INFO", out)]))
        return responses
"""

FAILING_MODEL = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("boom-in-initialize")

    def execute(self, requests):
        return []
"""


def _add_model(repo: Path, name: str, config: str, model: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(model))


@pytest.fixture
def echo_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    _add_model(repo, "echo", ECHO_CONFIG, ECHO_MODEL)
    return repo


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the whole test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _pids_mentioning(text: str) -> list[int]:
    """Live, non-zombie processes whose command line contains *text*."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


def _shm_files(prefix: str) -> list[Path]:
    return sorted(runs.SHM_DIR.glob(f"{prefix}*"))


def _assert_nothing_left(repo: Path, server: TritonServer) -> None:
    assert _pids_mentioning(str(repo)) == []
    assert _shm_files(server.shm_prefix) == []


def test_echo_over_http_and_grpc_then_clean_stop(echo_repo: Path, tmp_path: Path) -> None:
    server = TritonServer(echo_repo, "cpu", tmp_path / "triton.log")
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    with server:
        stubs = server.stub_pids()
        assert stubs
        assert set(stubs) <= set(live_stub_pids())
        assert _shm_files(server.shm_prefix)

        http = httpclient.InferenceServerClient(server.http_url)
        try:
            inp = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
            inp.set_data_from_numpy(data)
            np.testing.assert_array_equal(http.infer("echo", [inp]).as_numpy("OUTPUT0"), data)
        finally:
            http.close()

        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            inp = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
            inp.set_data_from_numpy(data)
            np.testing.assert_array_equal(grpc.infer("echo", [inp]).as_numpy("OUTPUT0"), data)
        finally:
            grpc.close()

    assert server.stop() == 0  # idempotent: the context manager already stopped it
    assert not set(stubs) & set(live_stub_pids())
    _assert_nothing_left(echo_repo, server)
    assert "Started GRPCInferenceService at 127.0.0.1:" in (tmp_path / "triton.log").read_text()


def test_stub_sees_venv_packages(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _add_model(repo, "venv", VENV_CONFIG, VENV_MODEL)
    with TritonServer(repo, "cpu", tmp_path / "triton.log") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            inp = httpclient.InferInput("DUMMY", [1, 1], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
            info = [v.decode() for v in client.infer("venv", [inp]).as_numpy("INFO")[0]]
        finally:
            client.close()
    assert info == [sys.prefix, np.__version__, tokenizers.__version__]
    assert server.stop() == 0
    _assert_nothing_left(repo, server)


@pytest.mark.parametrize("broken", ["syntax", "initialize"])
def test_broken_repository_raises_with_log_tail(broken: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    if broken == "syntax":
        _add_model(
            repo,
            "bad",
            ECHO_CONFIG.replace("max_batch_size: 8", "max_batch_size: 8 ]"),
            ECHO_MODEL,
        )
        expected = "bad"
    else:
        _add_model(repo, "bad", ECHO_CONFIG.replace('"echo"', '"bad"'), FAILING_MODEL)
        expected = "boom-in-initialize"
    server = TritonServer(repo, "cpu", tmp_path / "triton.log", startup_timeout_s=60)
    with pytest.raises(ServerError) as caught:
        server.start()
    first, _, tail = str(caught.value).partition("\n")
    assert "exited with code 1" in first
    assert str(tmp_path / "triton.log") in first
    assert expected in tail
    assert len(tail.splitlines()) <= 20
    _assert_nothing_left(repo, server)


def test_explicit_busy_port_is_named(echo_repo: Path, tmp_path: Path, held_port: int) -> None:
    free = processes.pick_free_ports()
    ports = Ports(http=held_port, grpc=free.grpc, metrics=free.metrics)
    server = TritonServer(echo_repo, "cpu", tmp_path / "triton.log", ports=ports)
    with pytest.raises(ServerError, match=f"http port {held_port} on 127.0.0.1 is already in use"):
        server.start()
    _assert_nothing_left(echo_repo, server)


def test_explicit_port_taken_after_check_is_named(echo_repo: Path, tmp_path: Path, held_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate losing the race between the up-front check and Triton's own bind.
    monkeypatch.setattr(launcher, "busy_port", lambda _address, _ports: None)
    free = processes.pick_free_ports()
    ports = Ports(http=free.http, grpc=held_port, metrics=free.metrics)
    server = TritonServer(echo_repo, "cpu", tmp_path / "triton.log", ports=ports)
    with pytest.raises(ServerError, match=f"grpc port {held_port} on 127.0.0.1 is already in use") as caught:
        server.start()
    assert "already in use" in str(caught.value).partition("\n")[2]
    _assert_nothing_left(echo_repo, server)


def test_auto_ports_retry_after_clash(echo_repo: Path, tmp_path: Path, held_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    picked: list[Ports] = []
    real_pick = processes.pick_free_ports

    def pick(address: str = "127.0.0.1") -> Ports:
        ports = real_pick(address)
        if not picked:
            ports = Ports(http=held_port, grpc=ports.grpc, metrics=ports.metrics)
        picked.append(ports)
        return ports

    monkeypatch.setattr(launcher, "pick_free_ports", pick)
    with TritonServer(echo_repo, "cpu", tmp_path / "triton.log") as server:
        assert len(picked) == 2
        assert server.ports == picked[1]
        assert server.http_url == f"127.0.0.1:{picked[1].http}"
    assert server.stop() == 0
    assert "already in use" in (tmp_path / "triton.log").read_text()
    _assert_nothing_left(echo_repo, server)


def test_wait_after_crash_cleans_orphaned_stubs_and_shm(echo_repo: Path, tmp_path: Path) -> None:
    server = TritonServer(echo_repo, "cpu", tmp_path / "triton.log")
    server.start()
    try:
        stubs = server.stub_pids()
        assert stubs
        assert _shm_files(server.shm_prefix)
        assert server.pid is not None
        # A crash leaves the stubs and their shared memory behind, as Triton never
        # gets to shut them down.
        os.kill(server.pid, signal.SIGKILL)
        assert server.wait() == -signal.SIGKILL
    finally:
        server.stop()
    assert not set(stubs) & set(live_stub_pids())
    _assert_nothing_left(echo_repo, server)


def test_server_stops_when_its_launcher_is_killed(echo_repo: Path, tmp_path: Path) -> None:
    repo = echo_repo
    script = tmp_path / "launch.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tasks.triton.launcher import TritonServer\n"
        f"server = TritonServer(Path({str(repo)!r}), 'cpu', Path({str(tmp_path / 'server.log')!r}))\n"
        "server.start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    # The script's own folder comes first on sys.path, not the checkout: name the checkout's tasks package.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert proc.stdout is not None
    server_pid = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while _process_exists(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    survived = _process_exists(server_pid)
    if survived:  # do not leave it running for the rest of the session
        os.killpg(server_pid, signal.SIGKILL)
    assert not survived


def _process_exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
