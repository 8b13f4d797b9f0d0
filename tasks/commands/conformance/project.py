"""The kit's private project: six tiny checkpoints, their model files, and doit builds of both targets.

One project folder per target (``build/conformance/cpu``, ``build/conformance/trt``) with the same
model files, so the two builds never overwrite each other's ``build/<m>`` and ``repos/<m>``; both
run this checkout's ``dodo.py`` (``doit -f``) in that folder (``doit -d``) as a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.commands.conformance import fixtures
from tasks.core import fsops
from tasks.core.errors import UserError
from tasks.stages.snapshot import DODO

_BUILD_TIMEOUT_S = 1800

# The LLMs build in fp32 on both sides: a tiny random model has near-tied logits that fp16 rounding
# can flip, and a greedy-text comparison must not fail on that.  Encoders build fp16 plans (what
# users deploy) and are compared by cosine, which tolerates the rounding.
LLM_YAML = """\
name: {name}
kind: llm
family: {family}
source:
  path: {path}
convert:
  dtype: float32
engine:
  max_batch_size: 4
  max_input_len: 64
  max_output_len: 16
triton:
  max_batch_size: 4
"""
BERT_YAML = """\
name: {name}
kind: encoder
family: bert
source:
  path: {path}
engine:
  max_batch_size: 8
  max_seq_len: 32
  precision: fp16
triton:
  max_batch_size: 8
"""
CLIP_YAML = """\
name: {name}
kind: encoder
family: clip-vision
source:
  path: {path}
engine:
  max_batch_size: 8
  opt_batch_size: 4
  precision: fp16
triton:
  max_batch_size: 8
"""


@dataclass(frozen=True)
class Model:
    """One model of the kit: its name (also the model file's and the repository's), family and kind."""

    name: str
    family: str
    kind: str  # "llm" or "encoder"
    yaml: str
    build: Callable[[Path], Path]


def _decoder(family: str) -> Callable[[Path], Path]:
    return lambda folder: fixtures.build_tiny_decoder(family, folder)


MODELS = {
    m.name: m
    for m in (
        Model("t5", "t5", "llm", LLM_YAML, fixtures.build_tiny_t5),
        Model("gpt2", "gpt2", "llm", LLM_YAML, _decoder("gpt2")),
        Model("llama", "llama", "llm", LLM_YAML, _decoder("llama")),
        Model("gemma", "gemma", "llm", LLM_YAML, _decoder("gemma")),
        Model("bert", "bert", "encoder", BERT_YAML, fixtures.build_tiny_bert),
        Model("clip", "clip-vision", "encoder", CLIP_YAML, fixtures.build_tiny_clip_vision),
    )
}
GROUPS = {"all": tuple(MODELS), "llm": ("t5", "gpt2", "llama", "gemma"), "encoders": ("bert", "clip")}


def select(spec: str) -> list[Model]:
    """``models=`` value: ``all``, ``llm``, ``encoders`` or a comma list of model names."""
    names: list[str] = []
    for word in (w.strip() for w in spec.split(",")):
        if word not in GROUPS and word not in MODELS:
            choices = ", ".join([*GROUPS, *MODELS])
            raise UserError("conformance: models", f"unknown model or group {word!r}; expected a comma list of {choices}")
        names += [n for n in GROUPS.get(word, (word,)) if n not in names]
    return [MODELS[n] for n in names]


def checkpoint(root: Path, model: Model) -> Path:
    """The model's tiny checkpoint under ``root``, generated once (fixed seeds) and published by rename."""
    folder = root / model.name
    if folder.is_dir():
        return folder
    tmp = fsops.tmp_sibling(folder)
    fsops.remove_tree(tmp)
    model.build(tmp)
    tmp.rename(folder)
    return folder


def write_models(project: Path, models: list[Model], checkpoints: dict[str, Path]) -> None:
    """models/<m>.yaml for each model, pointing at its generated checkpoint."""
    folder = project / "models"
    folder.mkdir(parents=True, exist_ok=True)
    for model in models:
        text = model.yaml.format(name=model.name, family=model.family, path=checkpoints[model.name].resolve())
        (folder / f"{model.name}.yaml").write_text(text, encoding="utf-8")


def doit_argv(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "doit", "-f", str(DODO), "-d", str(project.resolve()), *args]


@dataclass(frozen=True)
class Build:
    ok: bool
    seconds: float
    detail: str


def build(project: Path, model: Model, target: str, log: Path) -> Build:
    """``doit build:<m> target=<t>`` in ``project``; its output goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(DODO.parent), os.environ.get("PYTHONPATH", "")]))}
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(
            doit_argv(project, f"build:{model.name}", f"target={target}"),
            cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=_BUILD_TIMEOUT_S, check=False,
        )  # fmt: skip
    seconds = time.monotonic() - started
    if done.returncode == 0:
        return Build(ok=True, seconds=seconds, detail=f"doit build:{model.name} target={target} ({seconds:.1f} s)")
    return Build(ok=False, seconds=seconds, detail=f"doit exited {done.returncode}: {_last_error(log)} (log: {log})")


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("ERROR", "TaskFailed")) or "error" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no output"
