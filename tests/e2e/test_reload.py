"""serve's repository watch against a real tritonserver: a swapped repository is reloaded with no failed request."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tasks.commands.reload import RepoWatch
from tasks.core import fsops
from tasks.triton.launcher import TritonServer
from tests.e2e.test_launcher import ECHO_CONFIG, ECHO_MODEL, _add_model


def _hammer(url: str, stop: threading.Event, counts: dict[str, int]) -> None:
    client = httpclient.InferenceServerClient(url)
    data = np.ones((1, 4), dtype=np.float32)
    try:
        while not stop.is_set():
            inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
            inp.set_data_from_numpy(data)
            try:
                np.testing.assert_array_equal(client.infer("echo", [inp]).as_numpy("OUTPUT0"), data)
            except Exception:  # noqa: BLE001 - every kind of failure counts
                counts["failed"] += 1
            counts["sent"] += 1
    finally:
        client.close()


def test_swapped_repository_is_reloaded_without_failed_requests(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repo = tmp_path / "repos" / "m"
    _add_model(repo, "echo", ECHO_CONFIG, ECHO_MODEL)
    watch = RepoWatch(repo, reload=True)
    counts = {"sent": 0, "failed": 0}
    with TritonServer(repo, "cpu", tmp_path / "triton.log", model_control="explicit") as server:
        stop = threading.Event()
        sender = threading.Thread(target=_hammer, args=(server.http_url, stop, counts))
        sender.start()
        try:
            time.sleep(1)
            new = tmp_path / "repos" / ".m.new"
            _add_model(new, "echo", ECHO_CONFIG.replace("max_batch_size: 8", "max_batch_size: 4"), ECHO_MODEL)
            before = counts["sent"]
            fsops.swap_in(new, repo)
            with caplog.at_level(logging.INFO, logger="tasks.commands.reload"):
                started = time.monotonic()
                watch.check(server.http_url)
                took = time.monotonic() - started
            time.sleep(1)
            during = counts["sent"] - before  # from the swap to a second after the reload
        finally:
            stop.set()
            sender.join()
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            config = client.get_model_config("echo")
        finally:
            client.close()
    print(f"reload {took:.2f} s, {during} requests from the swap to 1 s after it, {counts['sent']} sent, {counts['failed']} failed")
    assert counts["failed"] == 0
    assert during > 0
    assert config["max_batch_size"] == 4
    assert [r.getMessage() for r in caplog.records if "reloaded echo" in r.getMessage()]


def test_reload_off_says_the_served_models_are_outdated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repo = tmp_path / "repos" / "m"
    _add_model(repo, "echo", ECHO_CONFIG, ECHO_MODEL)
    watch = RepoWatch(repo, reload=False)
    new = tmp_path / "repos" / ".m.new"
    _add_model(new, "echo", ECHO_CONFIG, ECHO_MODEL)
    fsops.swap_in(new, repo)
    with caplog.at_level(logging.INFO, logger="tasks.commands.reload"):
        watch.check("127.0.0.1:1")  # nothing is posted with reload off
        watch.check("127.0.0.1:1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"{repo} changed since serve started; the served models are outdated - restart serve or use reload=on"]
