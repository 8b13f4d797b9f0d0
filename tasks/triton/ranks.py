"""Multi-GPU serving: the ranks of a tensor-parallel engine, one ``mpirun`` leader-mode command, GPU checks."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from tasks.triton.argv import ServerError


@dataclass(frozen=True)
class Ranks:
    """How many server processes one multi-GPU engine needs, and which GPUs they may use."""

    world_size: int = 1
    gpus: tuple[int, ...] = ()

    @classmethod
    def from_params(cls, ranks: dict[str, Any]) -> Ranks:
        """From ``tasks.spec.sources.server_ranks`` (as serve and bench params carry it)."""
        return cls(int(ranks["world_size"]), tuple(ranks["gpus"]))


def leader_mode_command(rank_argv: list[str], ranks: Ranks, shm_prefix: str | None) -> list[str]:
    """``mpirun`` with one ``tritonserver`` per rank, as TensorRT-LLM's ``launch_triton_server.py`` starts them.

    Rank 0 loads the whole repository and serves the endpoints (the leader); every other rank
    loads only ``tensorrt_llm``, whose backend keeps it in the engine's worker loop, so those
    ranks never bind a port.  Each rank gets its own python-backend shared-memory prefix.
    """
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise ServerError(f"world size {ranks.world_size} needs mpirun (one tritonserver per GPU); it is not on PATH")
    argv = [mpirun, "--allow-run-as-root"]
    if ranks.gpus:
        argv += ["-x", f"CUDA_VISIBLE_DEVICES={','.join(map(str, ranks.gpus))}"]
    for rank in range(ranks.world_size):
        own = [a for a in rank_argv if not a.startswith(("--backend-config=python,shm-region-prefix-name=", "--model-control-mode="))]
        if rank > 0:
            own += ["--model-control-mode=explicit", "--load-model=tensorrt_llm"]
        else:
            own.append(next(a for a in rank_argv if a.startswith("--model-control-mode=")))
        if shm_prefix is not None:
            own.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}{rank}_")
        argv += ["-n", "1", *own, "--disable-auto-complete-config", ":"]
    return argv[:-1]


def check_gpus(ranks: Ranks, available: int | None) -> None:
    """An engine of world size N needs N GPUs: fail in one line before starting anything."""
    if ranks.gpus and len(ranks.gpus) != ranks.world_size:
        msg = f"the engines have world size {ranks.world_size} but triton.gpus names {len(ranks.gpus)} GPU(s): {list(ranks.gpus)}"
        raise ServerError(msg)
    if available is not None and (ranks.world_size > available or any(g >= available for g in ranks.gpus)):
        wanted = f"GPUs {list(ranks.gpus)}" if ranks.gpus else f"{ranks.world_size} GPUs"
        raise ServerError(f"the engines have world size {ranks.world_size} and need {wanted}, but nvidia-smi lists {available} GPU(s)")
