"""Shared test helpers: temporary project copies, doit runs as real processes, tiny models.

The tiny checkpoints the conformance kit also builds live in ``tasks.commands.conformance.fixtures``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tasks.commands.conformance.fixtures import SENTENCES, build_tiny_bert, build_tiny_clip_vision

ROOT = Path(__file__).resolve().parent.parent
FAKES = Path(__file__).resolve().parent / "fakes"


@dataclass
class DoitRun:
    rc: int
    stdout: str
    stderr: str

    @property
    def executed(self) -> set[str]:
        """Tasks doit ran (``.  task`` lines), without the action-less groups."""
        names = {line[3:].strip() for line in self.stdout.splitlines() if line.startswith(".  ")}
        return {n for n in names if not n.startswith("build:")}

    @property
    def up_to_date(self) -> set[str]:
        """Tasks found up to date: the summary's per-model lines (``  m  up to date  fetch, export``), or doit's ``-- task`` (log=debug)."""
        found = {line[3:].strip() for line in self.stdout.splitlines() if line.startswith("-- ")}
        for line in self.stdout.splitlines():
            model, sep, stages = line.strip().partition("  up to date  ")
            if line.startswith("  ") and sep and ":" not in model:
                found |= {f"{stage}:{model.strip()}" for stage in stages.split(", ")}
        return found


def copy_project(dest: Path, models: dict[str, str] | None = None) -> Path:
    """A fresh project: dodo.py, the tasks package and docker/ copied, models/ as given (default: the real ones)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "dodo.py", dest / "dodo.py")
    shutil.copytree(ROOT / "tasks", dest / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "docker", dest / "docker")  # docker/versions.env pins the toolchain the flag tables follow
    if models is None:
        shutil.copytree(ROOT / "models", dest / "models")
    else:
        (dest / "models").mkdir()
        for name, text in models.items():
            (dest / "models" / f"{name}.yaml").write_text(text, encoding="utf-8")
    return dest


def doit_env(extra: dict[str, str] | None = None, path_prefix: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    env.update(extra or {})
    return env


def doit_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "doit", *args]


def run_doit(project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> DoitRun:
    done = subprocess.run(
        doit_argv(*args), cwd=project, env=env or doit_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    return DoitRun(done.returncode, done.stdout, done.stderr)


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in a text file; the test fails if it is not there."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def read_json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# A tiny decoder-only LLM (fp32: near-tied logits of a random model must not flip under fp16 rounding).
DECODER_YAML = """\
name: {name}
kind: llm
family: {family}
source:
  path: {path}
convert:
  dtype: float32
engine:
  max_batch_size: 4
  max_input_len: 48
  max_output_len: 16
triton:
  max_batch_size: 4
"""


TINY_YAML = """\
name: tiny
kind: encoder
family: bert
source:
  path: {path}
export:
  opset: 18
engine:
  max_batch_size: 8
  max_seq_len: 32
triton:
  max_batch_size: 8
"""


def communicate_or_kill(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """``proc.communicate`` that kills the process if it overruns, so a failing test leaves nothing running."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


CLIP_VISION_YAML = """\
name: {name}
kind: encoder
family: clip-vision
source:
  path: {path}
engine:
  max_batch_size: 8
  opt_batch_size: 4
triton:
  max_batch_size: 8
"""


CLIP_TEXT_YAML = """\
name: {name}
kind: encoder
family: clip-text
source:
  path: {path}
engine:
  max_batch_size: 8
  max_seq_len: 16
triton:
  max_batch_size: 8
"""


# An ensemble of a CLIP vision model "clipv" and a CLIP text model "tiny".
VLM_YAML = """\
name: vlm
kind: ensemble
members:
  image: clipv
  text: tiny
triton:
  max_batch_size: 8
"""


def build_tiny_clip_text(folder: Path) -> Path:
    """A random 2-layer CLIP text tower with projection and a byte-level BPE tokenizer trained offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, PreTrainedTokenizerFast

    corpus = ["a photo of a cat", "a photo of a dog", "a drawing of a red car", "two birds over the sea", "a bowl of fruit"]
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=[bos, eos]))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos)  # type: ignore[no-untyped-call]
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=24,
        projection_dim=24,
        bos_token_id=tok.token_to_id(bos),
        eos_token_id=tok.token_to_id(eos),
        pad_token_id=tok.token_to_id(eos),
    )
    CLIPTextModelWithProjection(config).eval().save_pretrained(folder)  # type: ignore[no-untyped-call]
    fast.save_pretrained(folder)
    return folder


class Terminal(io.StringIO):
    """A text stream that says it is a terminal (status lines and [k/N] progress are drawn for it)."""

    def isatty(self) -> bool:
        return True


__all__ = ["SENTENCES", "build_tiny_bert", "build_tiny_clip_vision"]
