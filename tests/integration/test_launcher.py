"""Tests for tasks.triton.launcher against the real CPU tritonserver from nvidia-pytriton."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

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


def _add_model(repo: Path, name: str, config: str, model: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(model))


@pytest.fixture
def echo_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    _add_model(repo, "echo", ECHO_CONFIG, ECHO_MODEL)
    return repo


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
