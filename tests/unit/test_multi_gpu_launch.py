"""Engines with world size > 1, without a server: the mpirun (leader mode) command per rank, GPU checks, toolchain comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.triton.argv import Ports, ServerError, server_command
from tasks.triton.ranks import Ranks, check_gpus, leader_mode_command
from tests.support.launch import BUILT


def test_two_ranks_are_two_servers_and_only_rank_0_loads_the_whole_repository(fake_bin: Path) -> None:
    argv, _ = server_command(Path("/r/llama"), "trt", Ports(8000, 8001, 8002), None, shm_prefix="p_")
    command = leader_mode_command(argv, Ranks(2, (2, 3)), "p_")
    assert command[:4] == [str(fake_bin / "mpirun"), "--allow-run-as-root", "-x", "CUDA_VISIBLE_DEVICES=2,3"]
    first, second = (part.strip().split(" ") for part in " ".join(command[4:]).split(" : "))
    server = str(fake_bin / "tritonserver")
    assert first[:3] == ["-n", "1", server]
    assert second[:3] == ["-n", "1", server]
    assert "--model-control-mode=none" in first
    assert "--load-model=tensorrt_llm" not in first
    assert second[-4:] == [
        "--model-control-mode=explicit", "--load-model=tensorrt_llm",
        "--backend-config=python,shm-region-prefix-name=p_1_", "--disable-auto-complete-config",
    ]  # fmt: skip
    assert "--backend-config=python,shm-region-prefix-name=p_0_" in first
    # Same ports everywhere: ranks > 0 never bind them, their tensorrt_llm model never finishes loading.
    assert "--grpc-port=8001" in first
    assert "--grpc-port=8001" in second


@pytest.mark.parametrize(
    ("ranks", "available", "message"),
    [
        (Ranks(2, (0,)), 4, r"world size 2 but triton.gpus names 1 GPU\(s\): \[0\]"),
        (Ranks(2), 1, r"world size 2 and need 2 GPUs, but nvidia-smi lists 1 GPU\(s\)"),
        (Ranks(2, (0, 3)), 2, r"need GPUs \[0, 3\], but nvidia-smi lists 2 GPU\(s\)"),
    ],
)
def test_a_gpu_mismatch_is_one_clear_error(ranks: Ranks, available: int, message: str) -> None:
    with pytest.raises(ServerError, match=message):
        check_gpus(ranks, available)


def test_enough_gpus_or_no_nvidia_smi_pass() -> None:
    check_gpus(Ranks(2, (0, 1)), 2)
    check_gpus(Ranks(4), None)


def test_without_mpirun_a_multi_rank_engine_cannot_be_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerError, match="world size 2 needs mpirun"):
        leader_mode_command(["tritonserver", "--model-control-mode=none"], Ranks(2), None)


# --- engines built for another toolchain are refused before the server starts ----------------------------


def test_toolchain_mismatch_names_both_sides() -> None:
    from tasks.triton.compat import toolchain_mismatch

    assert toolchain_mismatch(BUILT, {**BUILT, "tensorrt": "10.14.1.48", "tensorrt_llm": "1.2.1+cu13"}) == []
    assert toolchain_mismatch(BUILT, {**BUILT, "gpu": "none", "compute_capability": "none"}) == []  # unknown here: not checked
    assert toolchain_mismatch(BUILT, {**BUILT, "tensorrt_llm": "1.3.0", "gpu": "NVIDIA A100-SXM4-80GB"}) == [
        "TensorRT-LLM 1.2.1 (built) vs 1.3.0 (here)",
        "GPU NVIDIA H100 80GB HBM3 (built) vs NVIDIA A100-SXM4-80GB (here)",
    ]


def test_the_running_tensorrt_version_is_the_known_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.tools import trtexec, trtllm
    from tasks.triton import compat

    # As in the plan image: trtexec reports TensorRT, no TensorRT python package, no TensorRT-LLM.
    monkeypatch.setattr(trtexec, "trt_fingerprint", lambda: {"tensorrt": "10.14.1", "gpu": "H100", "compute_capability": "9.0"})
    plan_image = {"tensorrt_llm": "not installed", "tensorrt": "not installed", "gpu": "H100", "compute_capability": "9.0"}
    monkeypatch.setattr(trtllm, "trt_fingerprint", lambda: plan_image)
    running = compat.running_toolchain()
    assert running["tensorrt"] == "10.14.1"
    assert compat.toolchain_mismatch({"tensorrt": "10.15.0", "gpu": "H100", "compute_capability": "9.0"}, running) == [
        "TensorRT 10.15.0 (built) vs 10.14.1 (here)"
    ]
