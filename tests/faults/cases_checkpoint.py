"""Broken checkpoints: bad numbers, broken safetensors files, a config of another family, links out of the folder.

Each case damages ``ckpts/bad`` (a copy of tiny's checkpoint) and runs ``doit build:bad``: the error must name the
checkpoint file and, where one tensor is at fault, the tensor.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.faults.cases import BAD, BAD_YAML, BUILD, Case

CATEGORY = "checkpoint"
WEIGHTS = "model.safetensors"
QUERY = "encoder.layer.0.attention.self.query.weight"
DENSE = "encoder.layer.1.output.dense.weight"


def folder(project: Path) -> Path:
    return project / "ckpts" / "bad"


def tensors(project: Path) -> dict[str, np.ndarray[Any, Any]]:
    from safetensors.numpy import load_file

    return dict(load_file(folder(project) / WEIGHTS))


def save(project: Path, data: dict[str, np.ndarray[Any, Any]]) -> None:
    from safetensors.numpy import save_file

    save_file(data, folder(project) / WEIGHTS, metadata={"format": "pt"})


def set_value(name: str, value: float, *, every: bool = False) -> Callable[[Path], None]:
    """One element of ``name`` (or every element of every float tensor) set to NaN or an infinity."""

    def damage(project: Path) -> None:
        data = tensors(project)
        for key, array in data.items():
            if every and array.dtype.kind == "f":
                data[key] = np.full_like(array, value)
        if not every:
            data[name] = data[name].copy()
            data[name].flat[3] = value
        save(project, data)

    return damage


def drop(name: str) -> Callable[[Path], None]:
    def damage(project: Path) -> None:
        data = tensors(project)
        del data[name]
        save(project, data)

    return damage


def reshape(name: str, shape: tuple[int, ...]) -> Callable[[Path], None]:
    """A tensor stored consistently but with a shape the family does not read."""

    def damage(project: Path) -> None:
        data = tensors(project)
        data[name] = np.zeros(shape, dtype=np.float32)
        save(project, data)

    return damage


def edit_header(change: Callable[[dict[str, dict[str, object]]], None]) -> Callable[[Path], None]:
    """The JSON header rewritten in place; the data bytes stay, so sizes and offsets may disagree with it."""

    def damage(project: Path) -> None:
        path = folder(project) / WEIGHTS
        raw = path.read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + length])
        change(header)
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])

    return damage


def set_field(name: str, key: str, value: object) -> Callable[[dict[str, dict[str, object]]], None]:
    def change(header: dict[str, dict[str, object]]) -> None:
        header[name][key] = value

    return change


def write_bytes(content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(project: Path) -> None:
        path = folder(project) / WEIGHTS
        path.write_bytes(content(path.read_bytes()))

    return damage


def edit_config(**values: object) -> Callable[[Path], None]:
    def damage(project: Path) -> None:
        path = folder(project) / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config.update(values)
        path.write_text(json.dumps(config), encoding="utf-8")

    return damage


def write_config(text: str) -> Callable[[Path], None]:
    def damage(project: Path) -> None:
        (folder(project) / "config.json").write_text(text, encoding="utf-8")

    return damage


def link_out(name: str) -> Callable[[Path], None]:
    """``name`` moved outside the checkpoint folder and a symlink left in its place."""

    def damage(project: Path) -> None:
        outside = project / "outside"
        outside.mkdir(exist_ok=True)
        (folder(project) / name).replace(outside / name)
        (folder(project) / name).symlink_to(outside / name)

    return damage


def not_linked_to(name: str) -> Callable[[Path], str | None]:
    """Exit 0 is fine for a link out of the folder if nothing the project serves shares the outside file's inode."""

    def check(project: Path) -> str | None:
        inode = (project / "outside" / name).stat().st_ino
        shared = [p for root in ("build/bad", "repos/bad") for p in (project / root).rglob("*") if p.is_file() and p.stat().st_ino == inode]
        return f"{shared[0].relative_to(project)} is a hardlink to the file outside the checkpoint" if shared else None

    return check


def ckpt_case(case_id: str, broken: str, damage: Callable[[Path], None], key: str | None, file: str = WEIGHTS, **extra: object) -> Case:
    return Case(case_id, CATEGORY, broken, {BAD: BAD_YAML}, BUILD, file=file, key=key, damage=damage, timeout=180, **extra)  # type: ignore[arg-type]


HUGE_HEADER = struct.pack("<Q", 10**12) + b"{}"
CASES = [
    ckpt_case("nan-one-tensor", f"one NaN in {QUERY}", set_value(QUERY, float("nan")), QUERY),
    ckpt_case("nan-every-tensor", "every float weight NaN", set_value(QUERY, float("nan"), every=True), None),
    ckpt_case("inf-one-tensor", f"+Inf in {DENSE}", set_value(DENSE, float("inf")), DENSE),
    ckpt_case(
        "neg-inf-layernorm",
        "-Inf in a LayerNorm weight",
        set_value("embeddings.LayerNorm.weight", float("-inf")),
        "embeddings.LayerNorm.weight",
    ),
    ckpt_case("truncated", "the weights file cut in half", write_bytes(lambda raw: raw[: len(raw) // 2]), None),
    ckpt_case("empty", "an empty weights file", write_bytes(lambda _raw: b""), None),
    ckpt_case("header-too-long", "a header length of 1 TB", write_bytes(lambda _raw: HUGE_HEADER), None),
    ckpt_case("header-not-json", "a header that is not JSON", write_bytes(lambda raw: raw[:8] + b"!" * (len(raw) - 8)), None),
    ckpt_case(
        "header-bad-shape",
        f"the header gives {QUERY} a shape its bytes do not fill",
        edit_header(set_field(QUERY, "shape", [33, 32])),
        QUERY,
    ),
    ckpt_case("header-bad-dtype", f"the header calls {QUERY} F64", edit_header(set_field(QUERY, "dtype", "F64")), QUERY),
    ckpt_case(
        "header-offsets-past-end",
        f"{DENSE}'s offsets past the end of the file",
        edit_header(set_field(DENSE, "data_offsets", [0, 10**9])),
        DENSE,
    ),
    ckpt_case("wrong-shape", f"{QUERY} stored as 32x16", reshape(QUERY, (32, 16)), QUERY),
    ckpt_case("missing-tensor", f"{DENSE} missing (transformers would initialise it at random)", drop(DENSE), DENSE),
    ckpt_case(
        "gpt2-config",
        "config.json of a gpt2 model under family bert",
        edit_config(model_type="gpt2", architectures=["GPT2Model"]),
        "model_type",
        "config.json",
    ),
    ckpt_case(
        "foreign-architecture",
        "architectures names a GPT-2 model",
        edit_config(architectures=["GPT2LMHeadModel"]),
        "architectures",
        "config.json",
    ),
    ckpt_case(
        "config-not-json",
        "config.json is not JSON",
        write_config("{model_type: bert"),
        None,
        "config.json",
    ),
    ckpt_case(
        "symlink-tokenizer-out",
        "tokenizer.json links outside the checkpoint",
        link_out("tokenizer.json"),
        None,
        "tokenizer.json",
        built_ok=not_linked_to("tokenizer.json"),
    ),
    ckpt_case("symlink-weights-out", "the weights link outside the checkpoint", link_out(WEIGHTS), None, built_ok=not_linked_to(WEIGHTS)),
]
