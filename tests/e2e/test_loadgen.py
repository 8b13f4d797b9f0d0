"""The built-in generator against a real Triton: concurrency kept, server counters read, timeouts fail cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.bench import loadgen, serverstats
from tasks.core.errors import UserError
from tasks.triton.launcher import TritonServer
from tasks.triton.processes import live_stub_pids

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""
MODEL = """\
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({delay})
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests
        ]
"""
DATA = np.ones((1, 4), dtype=np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loadgen") / "repo"
    for name, delay in (("quick", 0.005), ("slow", 3.0)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        (root / name / "1" / "model.py").write_text(MODEL.format(delay=delay))
    return root


def test_measure_reports_the_last_windows_with_server_counters(repo: Path, tmp_path: Path) -> None:
    with TritonServer(repo, "cpu", tmp_path / "triton.log") as server, loadgen.Client(server.grpc_url, "quick", timeout_s=30) as client:
        served = client.describe()
        assert served.composing == ("quick",)
        assert served.decoupled is False
        client.payloads = [loadgen.Payload.from_arrays({"INPUT0": DATA})]
        loadgen.warm_up(client, 3)
        level = loadgen.measure(client, 2, loadgen.Settings(0.3, 1e6, 3), 1)
    assert level.windows == loadgen.STABLE_WINDOWS
    assert level.stable
    assert level.samples
    assert all(s.error is None for s in level.samples)
    # One instance sleeping 5 ms per execution: two clients cannot get more than ~200 req/s.
    throughput = len(level.samples) / (level.duration_ns / 1e9)
    assert 20 < throughput < 220
    times = serverstats.server_times(level.before, level.after, "quick", served.composing)
    assert times is not None
    assert times.compute_infer >= 5000  # µs: the model's own sleep
    completed = level.after["quick"].success - level.before["quick"].success
    assert abs(completed - len(level.samples)) <= 2  # the same requests, up to one in flight per worker


def test_request_timeout_fails_the_level_and_the_server_stops_clean(repo: Path, tmp_path: Path) -> None:
    server = TritonServer(repo, "cpu", tmp_path / "triton.log")
    with server, loadgen.Client(server.grpc_url, "slow", timeout_s=1) as client:
        client.payloads = [loadgen.Payload.from_arrays({"INPUT0": DATA})]
        stubs = server.stub_pids()
        assert stubs
        with pytest.raises(UserError, match=r"requests to slow failed at concurrency 2; first error: Deadline Exceeded"):
            loadgen.measure(client, 2, loadgen.Settings(0.5, 10.0, 4), 1)
    assert server.exited()
    assert not set(stubs) & set(live_stub_pids())
