"""Streaming safetensors I/O: peak memory is about one tensor, never the whole checkpoint.

The format (safetensors documentation): an 8-byte little-endian header length ``N``, ``N``
bytes of JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the data buffer that follows; an optional ``"__metadata__"`` maps
str -> str), then the data buffer, row-major and little-endian.

Reading parses that header itself (``tasks.families.weights``, which also checks it against the
file) and fills each tensor with ``preadv`` into a fresh buffer.  ``safetensors.safe_open`` would
list the same names, but its ``get_tensor`` reads through an mmap and every page it touches
stays in the process's RSS (measured: reading a 1 GB file tensor by tensor left RSS at
1.25 GB), which is exactly what streaming avoids.
Writing takes a *plan* (name, shape, dtype, producer) so the header can be written first
and each tensor produced, written and freed before the next one exists.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

import torch

from tasks.core.errors import UserError
from tasks.families import weights

log = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Weight files of other formats, named when a folder has no safetensors so the message says what was found.
_OTHER_FORMATS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_HEADER_LEN_BYTES = 8
# safetensors' own writer pads the header so the data buffer starts 8-byte aligned; do the same.
_ALIGN = 8
# Codes of the safetensors format -> torch dtypes (the ones torch can hold).
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
CODES: dict[torch.dtype, str] = {dtype: code for code, dtype in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: listed from a header, no data read."""

    name: str
    code: str
    shape: tuple[int, ...]
    path: Path
    offset: int
    nbytes: int

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.code]


def list_file(path: Path, where: str) -> dict[str, TensorInfo]:
    """Every tensor of one ``.safetensors`` file, from its header alone (checked against the file's size)."""
    tensors: dict[str, TensorInfo] = {}
    for entry in weights.read_header(path, where):
        if entry.code not in DTYPES:
            raise UserError(where, f"{path}: tensor {entry.name!r} has dtype {entry.code}, which torch cannot hold")
        tensors[entry.name] = TensorInfo(entry.name, entry.code, entry.shape, path, entry.offset, entry.nbytes)
    return tensors


def _read_into(fd: int, view: memoryview, offset: int, path: Path, where: str) -> None:
    # One preadv may return less than asked (Linux caps a call near 2 GiB), so loop.
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise UserError(where, f"{path}: file ends before its tensor data does (truncated download?)")
        done += got


class Checkpoint:
    """The tensors of a checkpoint folder: names, shapes and dtypes from headers; data one tensor at a time."""

    def __init__(self, folder: Path, tensors: Mapping[str, TensorInfo], where: str) -> None:
        self.folder = folder
        self.tensors = dict(tensors)
        self.where = where
        self._fds: dict[Path, int] = {}

    @property
    def files(self) -> list[Path]:
        return sorted({info.path for info in self.tensors.values()})

    @property
    def file_bytes(self) -> int:
        """Size on disk of the weight files (what a copy of the checkpoint moves)."""
        return sum(path.stat().st_size for path in self.files)

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise UserError(self.where, f"{self.folder}: the checkpoint has no tensor {name!r}") from None

    def load(self, name: str) -> torch.Tensor:
        """Read one tensor into its own memory (nothing stays mapped afterwards)."""
        info = self.info(name)
        raw = torch.empty(info.nbytes, dtype=torch.uint8)
        if info.nbytes:
            fd = self._fds.get(info.path)
            if fd is None:
                fd = self._fds[info.path] = os.open(info.path, os.O_RDONLY)
            _read_into(fd, raw.numpy().data, info.offset, info.path, self.where)
        return raw.view(info.dtype).reshape(info.shape)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _index_files(folder: Path, where: str) -> list[Path]:
    index = folder / INDEX_FILE
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(where, f"{index}: not a safetensors index (expected a 'weight_map' object)") from exc
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise UserError(where, f"{index}: names shard files that are missing: {', '.join(missing)}")
    return [folder / name for name in names]


def weight_files(folder: Path, where: str) -> list[Path]:
    """The safetensors files of an HF checkpoint folder: the single file, or the shards of the index."""
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    if (folder / INDEX_FILE).is_file():
        return _index_files(folder, where)
    others = sorted(p.name for p in folder.iterdir() if p.suffix in _OTHER_FORMATS) if folder.is_dir() else []
    found = f"found {', '.join(others)}" if others else "found no weight files"
    raise UserError(
        where, f"{folder}: no {SINGLE_FILE} or {INDEX_FILE} ({found}); safetensors weights are required (re-save with safe_serialization)"
    )


def open_checkpoint(folder: Path, where: str) -> Checkpoint:
    """List every tensor of an HF checkpoint folder without reading any tensor data."""
    tensors: dict[str, TensorInfo] = {}
    for path in weight_files(folder, where):
        for name, info in list_file(path, where).items():
            if name in tensors:
                raise UserError(where, f"{folder}: tensor {name!r} is stored twice ({tensors[name].path.name}, {path.name})")
            tensors[name] = info
    log.debug("%s: %d tensors in %d file(s)", folder, len(tensors), len({i.path for i in tensors.values()}))
    return Checkpoint(folder, tensors, where)


@dataclass(frozen=True)
class Planned:
    """One output tensor: what the header says about it, and how to make it when its turn comes."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def header_bytes(plan: Sequence[Planned], metadata: Mapping[str, str] | None = None) -> bytes:
    """The length prefix and JSON header for ``plan``, tensors laid out in plan order."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for item in plan:
        if item.name in header or item.name == "__metadata__":
            msg = f"tensor name {item.name!r} is planned twice or reserved"
            raise ValueError(msg)
        header[item.name] = {"dtype": CODES[item.dtype], "shape": list(item.shape), "data_offsets": [offset, offset + item.nbytes]}
        offset += item.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + _HEADER_LEN_BYTES) % _ALIGN)
    return len(text).to_bytes(_HEADER_LEN_BYTES, "little") + text


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    # reshape(-1) first: a uint8 view of a multi-dim or 0-d tensor of another width is refused.
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data


def _stream(out: BinaryIO, plan: Sequence[Planned]) -> Iterator[int]:
    for item in plan:
        tensor = item.produce()
        if tuple(tensor.shape) != item.shape or tensor.dtype != item.dtype:
            msg = f"{item.name}: produced {tuple(tensor.shape)} {tensor.dtype}, planned {item.shape} {item.dtype}"
            raise ValueError(msg)
        out.write(_raw_bytes(tensor))
        del tensor  # freed before the next producer runs: the peak stays one tensor
        yield item.nbytes


def write_safetensors(path: Path, plan: Sequence[Planned], metadata: Mapping[str, str] | None = None) -> int:
    """Write ``plan`` to ``path`` as a safetensors file, one tensor in memory at a time; returns the file size.

    The file is written under a temporary name in the same folder and renamed at the
    end, so ``path`` is either absent or complete.
    """
    head = header_bytes(plan, metadata)
    tmp = path.with_name(f".{path.name}.incomplete-{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            out.write(head)
            total = len(head) + sum(_stream(out, plan))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return total
