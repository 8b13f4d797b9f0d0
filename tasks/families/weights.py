"""Weight files checked before any stage uses them: the safetensors layout, and no NaN or Inf anywhere.

A safetensors file (its documentation): an 8-byte little-endian header length ``N``, ``N``
bytes of UTF-8 JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin,
end]}`` (offsets relative to the data buffer that follows), then the data buffer.  The
reference reader refuses a buffer that its tensors do not cover exactly, so this does too:
tensors laid end to end from 0, no gap, no overlap, nothing after the last one.

The NaN/Inf scan reads each float tensor in chunks of a few MB into one reused buffer and
looks at the exponent bits alone (all ones: NaN or Inf), the same test for fp16, bf16,
fp32, fp64 and fp8, so bf16 needs no conversion.  Memory stays at one chunk whatever the
checkpoint size; pages are read, not mapped, so they do not pile up in the process's RSS.
Pickled ``.bin`` checkpoints are loaded memory-mapped by torch and checked the same way.

Only numpy is imported here (torch only for ``.bin``): the fetch stage calls this.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import UserError

if TYPE_CHECKING:
    import numpy as np

HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 100_000_000  # the reference reader's own limit
CHUNK_BYTES = 4 << 20
# Bits per element of every safetensors dtype this project reads.
BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64,
    "I64": 64, "U64": 64, "F64": 64,
}  # fmt: skip
# Float dtypes: (unsigned view, exponent bits, all bits but the sign).  Exponent all ones means
# NaN or Inf; more set bits than the exponent's means NaN.  E4M3 and E8M0 have no Inf, only NaN.
FLOATS = {
    "F64": ("<u8", 0x7FF0000000000000, 0x7FFFFFFFFFFFFFFF),
    "F32": ("<u4", 0x7F800000, 0x7FFFFFFF),
    "C64": ("<u4", 0x7F800000, 0x7FFFFFFF),  # two F32 per element
    "F16": ("<u2", 0x7C00, 0x7FFF),
    "BF16": ("<u2", 0x7F80, 0x7FFF),
    "F8_E5M2": ("u1", 0x7C, 0x7F),
    "F8_E4M3": ("u1", 0x7F, 0x7F),
    "F8_E8M0": ("u1", 0xFF, 0xFF),
}
SAFETENSORS_GLOB = "*.safetensors"
PICKLE_GLOBS = ("pytorch_model.bin", "pytorch_model-*-of-*.bin")


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file as its header describes it; ``offset`` is absolute in the file."""

    name: str
    code: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Checked:
    """What a validation looked at, for the stage record."""

    files: int
    tensors: int
    bytes: int
    seconds: float


def _fail(where: str, path: Path, what: str) -> UserError:
    return UserError(where, f"{path}: {what}")


def _not_finite(path: Path, name: str, kind: str, what: str, where: str) -> UserError:
    return _fail(where, path, f"tensor {name[:200]!r} ({kind}) holds {what}; weights must be finite (a broken download or training run?)")


def _header_bytes(path: Path, size: int, where: str) -> bytes:
    if size == 0:
        raise _fail(where, path, "empty file (not a safetensors file)")
    if size < HEADER_LEN_BYTES:
        raise _fail(where, path, f"{size} bytes, shorter than the 8-byte header length (truncated?)")
    with path.open("rb") as f:
        length = int.from_bytes(f.read(HEADER_LEN_BYTES), "little")
        if not 0 < length <= MAX_HEADER_BYTES:
            raise _fail(where, path, f"header length {length} is not in 1..{MAX_HEADER_BYTES} (not a safetensors file?)")
        if HEADER_LEN_BYTES + length > size:
            raise _fail(where, path, f"header length {length} runs past the end of the {size}-byte file (truncated?)")
        return f.read(length)


def _header_json(path: Path, where: str) -> tuple[dict[str, Any], int, int]:
    """The header object, the absolute offset of the data buffer and the file size."""
    size = path.stat().st_size
    raw = _header_bytes(path, size, where)
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(where, path, f"header is not UTF-8 (byte {exc.start}); not a safetensors file") from None
    except ValueError as exc:
        raise _fail(where, path, f"header is not valid JSON ({str(exc)[:120]}); not a safetensors file") from None
    if not isinstance(header, dict):
        raise _fail(where, path, "header is not a JSON object; not a safetensors file")
    return header, HEADER_LEN_BYTES + len(raw), size


def _entry(name: str, meta: Any, path: Path, start: int, where: str) -> tuple[Entry, int, int]:  # noqa: ANN401 - raw JSON
    """One header entry checked on its own, with its relative [begin, end)."""
    shown = name[:200]
    try:
        code, dims, offsets = meta["dtype"], meta["shape"], meta["data_offsets"]
        shape = tuple(int(d) for d in dims if isinstance(d, int) and not isinstance(d, bool) and d >= 0)
        begin, end = (int(o) for o in offsets if isinstance(o, int) and not isinstance(o, bool))
    except (KeyError, TypeError, ValueError):
        raise _fail(where, path, f"tensor {shown!r}: header entry needs dtype, shape and two data_offsets") from None
    if len(shape) != len(dims):
        raise _fail(where, path, f"tensor {shown!r}: shape {str(dims)[:80]} is not a list of sizes >= 0")
    if code not in BITS:
        raise _fail(where, path, f"tensor {shown!r}: unknown dtype {str(code)[:20]!r} (known: {', '.join(BITS)})")
    nbytes = math.prod(shape) * BITS[code] // 8
    if end - begin != nbytes:
        held = f"data_offsets [{begin}, {end}] hold {end - begin}"
        raise _fail(where, path, f"tensor {shown!r}: {code} {list(shape)} needs {nbytes} bytes, {held}")
    return Entry(name, code, shape, start + begin, nbytes), begin, end


def _check_layout(spans: list[tuple[int, int, str]], data_len: int, path: Path, where: str) -> None:
    """Tensors end to end from 0 to the end of the file: no gap, no overlap, nothing missing or left over."""
    cursor, previous = 0, "the header"
    for begin, end, name in sorted(spans):
        if begin != cursor:
            how = "overlaps" if begin < cursor else f"leaves a {begin - cursor}-byte gap after"
            raise _fail(where, path, f"tensor {name[:200]!r} (data_offsets [{begin}, {end}]) {how} {previous}")
        cursor, previous = end, repr(name[:200])
    if cursor > data_len:
        last = previous
        raise _fail(where, path, f"file ends {cursor - data_len} bytes before the data of tensor {last} does (truncated download?)")
    if cursor < data_len:
        raise _fail(where, path, f"{data_len - cursor} bytes after the last tensor that no tensor describes (corrupt file?)")


def read_header(path: Path, where: str) -> list[Entry]:
    """Every tensor of a safetensors file, from its header alone, each one checked against the file."""
    header, start, size = _header_json(path, where)
    entries: list[Entry] = []
    spans: list[tuple[int, int, str]] = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        entry, begin, end = _entry(name, meta, path, start, where)
        entries.append(entry)
        spans.append((begin, end, name))
    _check_layout(spans, size - start, path, where)
    return entries


# ---- NaN / Inf ----------------------------------------------------------------------------------


def _chunks(fd: int, entry: Entry, buffer: bytearray) -> Iterator[memoryview]:
    """The tensor's bytes, a chunk at a time, read into ``buffer`` (reused: each chunk is gone at the next)."""
    done = 0
    while done < entry.nbytes:
        view = memoryview(buffer)[: min(len(buffer), entry.nbytes - done)]
        got = 0
        while got < len(view):
            n = os.preadv(fd, [view[got:]], entry.offset + done + got)
            if n == 0:
                return  # the header check saw the file complete; a file shrinking under us ends the scan
            got += n
        yield view
        done += len(view)


def _non_finite(words: np.ndarray[Any, Any], exponent: int, magnitude: int) -> tuple[int, str] | None:
    """The first element whose exponent bits are all ones, and whether it is NaN or Inf."""
    import numpy as np  # noqa: PLC0415

    masked = np.bitwise_and(words, words.dtype.type(exponent))
    if masked.max(initial=0) != exponent:
        return None
    index = int(np.argmax(masked == exponent))
    is_nan = exponent == magnitude or int(words[index]) & magnitude > exponent
    return index, "NaN" if is_nan else "Inf"


def _scan_tensor(fd: int, entry: Entry, buffer: bytearray, path: Path, where: str) -> None:
    import numpy as np  # noqa: PLC0415

    view, exponent, magnitude = FLOATS[entry.code]
    width = np.dtype(view).itemsize
    seen = 0
    for chunk in _chunks(fd, entry, buffer):
        found = _non_finite(np.frombuffer(chunk, dtype=view), exponent, magnitude)
        if found is not None:
            index = (seen + found[0]) // (2 if entry.code == "C64" else 1)
            raise _not_finite(path, entry.name, f"{entry.code} {list(entry.shape)}", f"{found[1]} at element {index}", where)
        seen += len(chunk) // width


def scan_safetensors(path: Path, entries: Sequence[Entry], where: str) -> None:
    """Refuse the first float tensor holding a NaN or an Inf, reading the file once in offset order."""
    buffer = bytearray(CHUNK_BYTES)
    fd = os.open(path, os.O_RDONLY)
    try:
        for entry in sorted(entries, key=lambda e: e.offset):
            if entry.code in FLOATS:
                _scan_tensor(fd, entry, buffer, path, where)
    finally:
        os.close(fd)


def _load_pickle(path: Path, where: str) -> dict[str, Any]:
    import torch  # noqa: PLC0415 - only pickled checkpoints need it

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (pre-zip) format cannot be mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a broken file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise _fail(where, path, f"not a loadable PyTorch checkpoint ({first})") from None
    if not isinstance(state, dict):
        raise _fail(where, path, "not a PyTorch state dict (expected a mapping of tensor names to tensors)")
    return state


def scan_pickle(path: Path, where: str) -> int:
    """Refuse the first float tensor of a pickled state dict holding a NaN or an Inf; returns the tensor count."""
    import torch  # noqa: PLC0415

    state = _load_pickle(path, where)
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            continue
        flat = tensor.reshape(-1)
        step = max(1, CHUNK_BYTES // max(1, flat.element_size()))
        for start in range(0, flat.numel(), step):
            bad = (~torch.isfinite(flat[start : start + step])).nonzero()
            if bad.numel():
                index = start + int(bad[0])
                kind = "NaN" if bool(torch.isnan(flat[index])) else "Inf"
                raise _not_finite(path, str(name), f"{tensor.dtype} {list(tensor.shape)}", f"{kind} at element {index}", where)
    return len(state)


def weight_files(files: Iterable[Path]) -> list[Path]:
    """The weight files among ``files``: every safetensors file, else the pickled ``pytorch_model*.bin`` weights."""
    files = sorted(files)
    found = [p for p in files if p.match(SAFETENSORS_GLOB)]
    return found or [p for p in files if any(p.match(pattern) for pattern in PICKLE_GLOBS)]


def check_files(files: Iterable[Path], where: str) -> Checked:
    """Validate the weight files among ``files``: each safetensors layout, then no NaN or Inf in any float tensor."""
    started = time.monotonic()
    count = tensors = size = 0
    for path in weight_files(files):
        if path.suffix == ".bin":
            tensors += scan_pickle(path, where)
        else:
            entries = read_header(path, where)
            scan_safetensors(path, entries, where)
            tensors += len(entries)
        count += 1
        size += path.stat().st_size
    return Checked(count, tensors, size, round(time.monotonic() - started, 3))


def check_folder(folder: Path, where: str) -> Checked:
    """Validate the weights of an HF checkpoint folder."""
    return check_files((p for p in folder.rglob("*") if p.is_file()), where)
