"""The converter cross-check: NVIDIA's own ``convert_checkpoint.py`` on the same HF folder, tensor by tensor.

Where the scripts are: TensorRT-LLM 1.2.1 keeps one per family under ``examples/models/core/``
(``enc_dec``, ``gpt``, ``llama``, ``gemma``).  Images built from the backend's own Dockerfile copy
``examples/`` to ``/app/examples`` (the default here); some NGC images ship no ``/app``, so the folder
is configurable (``trtllm_examples=`` / ``TRTLLM_EXAMPLES``): a TensorRT-LLM checkout at the tag of
the image's TensorRT-LLM version works too.  Their command lines follow each family's README for
1.x (``reference/trtllm.md`` §1-2): enc_dec, gpt and llama take ``--model_dir`` / ``--output_dir``,
Gemma's script takes hyphenated ``--ckpt-type hf --model-dir --output-model-dir --world-size``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.commands.conformance.project import Model

DEFAULT_EXAMPLES = Path("/app/examples")
_TIMEOUT_S = 900
# Both sides convert fp32 weights with the same arithmetic (transposes, concatenations, +1 on
# Gemma's norms); anything beyond float rounding is a real difference.
_RTOL, _ATOL = 1e-5, 1e-6
_FOLDERS = {"enc_dec": ("encoder", "decoder")}
_SCRIPTS = {"t5": "enc_dec", "gpt2": "gpt", "llama": "llama", "gemma": "gemma"}


def examples_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("TRTLLM_EXAMPLES") or DEFAULT_EXAMPLES)


def script(examples: Path, model: Model) -> Path:
    return examples / "models" / "core" / _SCRIPTS[model.family] / "convert_checkpoint.py"


def upstream_argv(examples: Path, model: Model, hf: Path, out: Path) -> list[str]:
    """NVIDIA's converter for ``model``'s family, fp32, one rank."""
    head = [sys.executable, str(script(examples, model))]
    if model.family == "gemma":
        return [
            *head,
            "--ckpt-type",
            "hf",
            "--model-dir",
            str(hf),
            "--output-model-dir",
            str(out),
            "--dtype",
            "float32",
            "--world-size",
            "1",
        ]
    family = ["--model_type", "t5", "--tp_size", "1", "--pp_size", "1"] if model.family == "t5" else []
    return [*head, *family, "--model_dir", str(hf), "--output_dir", str(out), "--dtype", "float32"]


@dataclass(frozen=True)
class CrossCheck:
    ok: bool
    seconds: float
    detail: str
    data: dict[str, Any]


def run(examples: Path, model: Model, *, hf: Path, ours: Path, out: Path, log: Path) -> CrossCheck:
    """Convert ``hf`` with NVIDIA's script into ``out`` and compare it with our ``ours`` (build/<m>/convert)."""
    started = time.monotonic()
    if not script(examples, model).is_file():
        why = f"{script(examples, model)} not found; point trtllm_examples= at TensorRT-LLM's examples/ of the image's version"
        return CrossCheck(ok=False, seconds=0.0, detail=why, data={})
    if not (ours / "config.json").is_file() and not (ours / "decoder/config.json").is_file():
        return CrossCheck(ok=False, seconds=0.0, detail=f"our converted checkpoint {ours} is missing (convert stage failed?)", data={})
    argv = upstream_argv(examples, model, hf, out)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as sink:
        done = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, timeout=_TIMEOUT_S, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        return CrossCheck(ok=False, seconds=seconds, detail=f"{argv[1]} exited {done.returncode} (log: {log})", data={"argv": argv})
    problems, counts = [], {}
    for folder in _FOLDERS.get(_SCRIPTS[model.family], ("",)):
        found, compared = compare_ranks(ours / folder, out / folder)
        problems += [f"{folder}/{p}" if folder else p for p in found]
        counts[folder or "."] = compared
    data = {"argv": argv, "tensors": counts, "problems": problems}
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return CrossCheck(ok=False, seconds=seconds, detail=f"{problems[0]}{more}", data=data)
    total = sum(counts.values())
    return CrossCheck(ok=True, seconds=seconds, detail=f"{total} tensors equal in name, shape and value", data=data)


def compare_ranks(ours: Path, theirs: Path) -> tuple[list[str], int]:
    """Differences between the ``rank*.safetensors`` of two checkpoint folders, and how many tensors were compared."""
    names = sorted({p.name for p in ours.glob("rank*.safetensors")} | {p.name for p in theirs.glob("rank*.safetensors")})
    if not names:
        return [f"no rank*.safetensors in {ours} or {theirs}"], 0
    problems: list[str] = []
    compared = 0
    for name in names:
        if not (ours / name).is_file() or not (theirs / name).is_file():
            problems.append(f"{name} only in {'theirs' if (theirs / name).is_file() else 'ours'}")
            continue
        found, count = compare_tensors(_load(ours / name), _load(theirs / name))
        problems += [f"{name}: {p}" for p in found]
        compared += count
    return problems, compared


def compare_tensors(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[list[str], int]:
    import numpy as np  # noqa: PLC0415

    problems = [f"{n}: only in ours" for n in sorted(set(ours) - set(theirs))]
    problems += [f"{n}: only in theirs" for n in sorted(set(theirs) - set(ours))]
    common = sorted(set(ours) & set(theirs))
    for name in common:
        a, b = ours[name], theirs[name]
        if a.shape != b.shape:
            problems.append(f"{name}: shape {list(a.shape)} (ours) != {list(b.shape)} (theirs)")
        elif a.dtype != b.dtype:
            problems.append(f"{name}: dtype {a.dtype} (ours) != {b.dtype} (theirs)")
        elif not np.allclose(a, b, rtol=_RTOL, atol=_ATOL):
            worst = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
            problems.append(f"{name}: values differ (max |ours - theirs| = {worst:.3g})")
    return problems, len(common)


def _load(path: Path) -> dict[str, Any]:
    """Every tensor of one safetensors file as a numpy array, read with the converters' own reader."""
    import torch  # noqa: PLC0415

    from tasks.families.converters.safetensors_stream import Checkpoint, list_file  # noqa: PLC0415

    # numpy has no bfloat16 / float8: those are widened to float32, which holds them exactly.
    widened = {torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2}
    with Checkpoint(path.parent, list_file(path, str(path)), str(path)) as checkpoint:
        loaded = {name: checkpoint.load(name) for name in checkpoint.tensors}
    return {name: (t.float() if t.dtype in widened else t).numpy() for name, t in loaded.items()}
