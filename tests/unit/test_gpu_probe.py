"""nvidia-smi is asked once per driver fingerprint (driver version and each GPU's model), not on every invocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.tools import toolchain


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proc-driver-nvidia"
    (root / "gpus" / "0000:01:00.0").mkdir(parents=True)
    (root / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06\n")
    (root / "gpus" / "0000:01:00.0" / "information").write_text("Model: \t\t NVIDIA H100 80GB HBM3\n")
    monkeypatch.setattr(toolchain, "_DRIVER", root)
    monkeypatch.setattr(toolchain, "GPU_CACHE", tmp_path / "gpu.json")
    return root


def test_nvidia_smi_runs_once_per_driver_fingerprint(driver: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def query() -> dict[str, str]:
        asked.append(1)
        return {"gpu": f"NVIDIA H100 80GB HBM3 #{len(asked)}", "compute_capability": "9.0"}

    monkeypatch.setattr(toolchain, "_query_gpu", query)
    for _ in range(3):  # three invocations of doit: each process starts with an empty in-memory cache
        toolchain.gpu.cache_clear()
        assert toolchain.gpu() == {"gpu": "NVIDIA H100 80GB HBM3 #1", "compute_capability": "9.0"}
    assert len(asked) == 1
    # Another GPU in the machine (or a new driver): asked again.
    (driver / "gpus" / "0000:01:00.0" / "information").write_text("Model: \t\t NVIDIA L4\n")
    toolchain.gpu.cache_clear()
    assert toolchain.gpu()["gpu"] == "NVIDIA H100 80GB HBM3 #2"
    assert len(asked) == 2


def test_without_a_driver_nothing_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "_DRIVER", tmp_path / "absent")
    monkeypatch.setattr(toolchain, "GPU_CACHE", tmp_path / "gpu.json")
    monkeypatch.setattr(toolchain, "_query_gpu", lambda: {"gpu": "none", "compute_capability": "none"})
    toolchain.gpu.cache_clear()
    assert toolchain.driver_fingerprint(tmp_path / "absent") == "none"
    assert toolchain.gpu() == {"gpu": "none", "compute_capability": "none"}
    assert not (tmp_path / "gpu.json").exists()
    toolchain.gpu.cache_clear()
