"""Checkpoint converters: Hugging Face folders -> TensorRT-LLM checkpoints, one module per family.

A family's converter is ``convert(source, out, settings, where) -> Converted``.  Modules are
imported only when a conversion runs: they import torch, which costs seconds that listing
the build graph should not pay.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from tasks.core import interrupts
from tasks.core.errors import UserError

DTYPE_NAMES = ("float32", "float16", "bfloat16")
# family (the model YAML's ``family``) -> "module:function" converting it.
FAMILIES: dict[str, str] = {
    "t5": "tasks.families.converters.t5:convert",
    "gpt2": "tasks.families.converters.decoder:convert_gpt2",
    "llama": "tasks.families.converters.decoder:convert_llama",
    "gemma": "tasks.families.converters.decoder:convert_gemma",
}


@dataclass(frozen=True)
class Settings:
    """The ``convert:`` block: target dtype and parallelism."""

    dtype: str = "float16"
    tp_size: int = 1
    pp_size: int = 1

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size

    @classmethod
    def from_params(cls, block: Mapping[str, Any], where: str) -> Settings:
        """Settings from the ``convert:`` params, each value checked."""
        settings = cls(block.get("dtype", cls.dtype), block.get("tp_size", cls.tp_size), block.get("pp_size", cls.pp_size))
        settings.check(where)
        return settings

    def check(self, where: str) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise UserError(where, f"dtype {self.dtype!r}: expected one of {', '.join(DTYPE_NAMES)}")
        for key, value in (("tp_size", self.tp_size), ("pp_size", self.pp_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(where, f"{key} {value!r}: expected an integer >= 1")


@dataclass(frozen=True)
class Converted:
    """Facts about one conversion, for the stage record."""

    source_bytes: int
    target_bytes: int
    tensors: int
    files: int
    vocab_padded: int | None = None


class Converter(Protocol):
    def __call__(self, source: Path, out: Path, settings: Settings, where: str) -> Converted: ...


def converter(family: str, where: str) -> Converter:
    """The converter function of a family."""
    target = FAMILIES.get(family)
    if target is None:
        raise UserError(where, f"family {family!r} has no checkpoint converter (available: {', '.join(sorted(FAMILIES))})")
    module, _, function = target.partition(":")
    interrupts.import_held(module)  # converters import torch
    return cast("Converter", getattr(importlib.import_module(module), function))


def read_checkpoint_config(folder: Path, where: str) -> dict[str, Any]:
    """An HF checkpoint's config.json as a dict; unreadable or not an object is one clear error."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(where, f"{path}: cannot read the checkpoint config ({exc.strerror})") from exc
    except ValueError as exc:
        raise UserError(where, f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise UserError(where, f"{path}: expected a JSON object")
    return config
