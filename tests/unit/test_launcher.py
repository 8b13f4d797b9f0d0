"""The tritonserver command line, its environment and backend folder for target cpu, built without starting a server."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import pytest

from tasks.triton import argv
from tasks.triton.argv import Ports, ServerError, server_command


def test_server_command_cpu_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/previous/lib")
    monkeypatch.setenv("PATH", "/usr/bin")
    ports = Ports(http=1, grpc=2, metrics=3)
    argv, env = server_command(tmp_path / "repo", "cpu", ports, tmp_path / "backends", exit_timeout_s=7)

    ld_path = env["LD_LIBRARY_PATH"].split(":")
    assert ld_path[0] == sysconfig.get_config_var("LIBDIR")
    assert ld_path[1].endswith("nvidia_pytriton.libs")
    assert ld_path[-1] == "/previous/lib"
    path = env["PATH"].split(":")
    assert path[0] == str(Path(sys.executable).parent)
    assert path[-1] == "/usr/bin"

    assert argv[0].endswith("pytriton/tritonserver/bin/tritonserver")
    for flag in (
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        "--http-port=1",
        "--grpc-port=2",
        "--metrics-port=3",
        "--exit-on-error=true",
        "--exit-timeout-secs=7",
        f"--model-repository={tmp_path / 'repo'}",
        f"--backend-directory={tmp_path / 'backends'}",
    ):
        assert flag in argv
    assert not any(arg.startswith(("--strict-model-config", "--disable-auto-complete")) for arg in argv)


def test_server_command_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = Ports(http=1, grpc=2, metrics=3)
    with pytest.raises(ServerError, match="backend directory"):
        server_command(tmp_path, "cpu", ports, None)
    with pytest.raises(ServerError, match="unknown target"):
        server_command(tmp_path, "gpu", ports, None)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(argv, "TRT_FALLBACK_BINARY", tmp_path / "missing")
    with pytest.raises(ServerError, match="Triton container"):
        argv.find_tritonserver("trt")


def test_prepare_backend_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = argv.prepare_backend_dir(tmp_path / "backends")
    names = sorted(p.name for p in (dest / "python").iterdir())
    assert names == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    assert argv.prepare_backend_dir(dest) == dest  # rerunnable
    monkeypatch.setattr(argv, "_python_version", lambda: "2.7")
    with pytest.raises(ServerError, match=r"no python-backend stub for Python 2\.7 \(has: .*3\.11"):
        argv.prepare_backend_dir(tmp_path / "other")
