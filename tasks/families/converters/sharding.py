"""How HF tensors become the tensors of one TensorRT-LLM rank file: rules, splits, and lazy producers.

A ``Rule`` names one TRT-LLM tensor, the HF tensors it is made of and how it is divided
between tensor-parallel ranks.  Shapes are known from the safetensors headers before any
data is read; data is read, cut, cast and written one tensor at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum

import torch

from tasks.core.errors import UserError
from tasks.families.converters import Settings
from tasks.families.converters.safetensors_stream import Checkpoint, Planned

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class Split(Enum):
    """How a tensor is divided between tensor-parallel ranks."""

    REPLICATE = "replicate"  # every rank holds all of it
    OUT = "out"  # dim 0: heads, d_ff or vocab rows (column-parallel)
    IN = "in"  # dim 1: the input dim of row-parallel layers
    QKV = "qkv"  # q, k and v each split on heads, then stacked [q; k; v]


@dataclass(frozen=True)
class Rule:
    """One TRT-LLM tensor: its name, HF sources (templates), split and the source shape in symbolic dims."""

    target: str
    sources: tuple[str, ...]
    split: Split
    shape: tuple[str, ...]
    transpose: bool = False
    pad_rows: bool = False  # vocab rows padded up to a multiple of tp_size
    # QKV only: head count of each part (q, k, v).  A part whose heads tp_size does not divide
    # (grouped-query attention with fewer kv heads than ranks) gives each rank one whole head.
    heads: tuple[int, ...] = ()
    fused: bool = False  # QKV only: one source holding q, k and v stacked on dim 0 (GPT-2's c_attn)
    offset: float = 0.0  # added to every value (Gemma stores its RMSNorm scale as w - 1)

    def format(self, **names: object) -> Rule:
        return replace(self, target=self.target.format(**names), sources=tuple(s.format(**names) for s in self.sources))


def padded_vocab(vocab_size: int, tp: int) -> int:
    """The vocab rounded up to a multiple of tp_size (TRT-LLM's pad_vocab_size rule)."""
    return -(-vocab_size // tp) * tp


def vocab_padding(vocab_size: int, tp: int) -> int | None:
    """The lm_head rows after padding when tp_size does not divide the vocab (and says so), else None."""
    padded = padded_vocab(vocab_size, tp)
    if padded == vocab_size:
        return None
    log.warning("convert: lm_head padded from %d to %d rows (a multiple of tp_size %d)", vocab_size, padded, tp)
    return padded


def _rows(rows: int, rule: Rule, tp: int) -> int:
    """Rows of the full tensor after padding (vocab only)."""
    return padded_vocab(rows, tp) if rule.pad_rows else rows


def _oriented(shape: tuple[int, ...], rule: Rule) -> tuple[int, ...]:
    return shape[::-1] if rule.transpose and len(shape) == 2 else shape  # noqa: PLR2004 - a matrix, not a bias


def _part_rows(rows: int, heads: int, tp: int) -> int:
    """Rows of one q/k/v part on one rank: its share of heads, or one whole head."""
    return rows // tp if heads % tp == 0 else rows // heads


def shard_shape(source: tuple[int, ...], rule: Rule, tp: int) -> tuple[int, ...]:
    """Shape of one rank's tensor, from the (first) HF source shape."""
    shape = _oriented(source, rule)
    if rule.split is Split.REPLICATE:
        return shape
    if rule.split is Split.IN:
        return (shape[0], shape[1] // tp)
    if rule.split is Split.QKV and rule.heads:
        part_rows = [shape[0] // 3] * 3 if rule.fused else [_qkv_rows(rule, i, shape[0]) for i in range(3)]
        return (sum(_part_rows(rows, heads, tp) for rows, heads in zip(part_rows, rule.heads, strict=True)), *shape[1:])
    rows = _rows(shape[0], rule, tp) // tp
    return (len(rule.sources) * rows, *shape[1:])


def _qkv_rows(rule: Rule, index: int, first_rows: int) -> int:
    # q, k and v share a head size; only their head counts differ.
    return first_rows // rule.heads[0] * rule.heads[index]


def _head_share(part: torch.Tensor, heads: int, rank: int, tp: int) -> torch.Tensor:
    if heads % tp == 0:
        size = part.shape[0] // tp
        return part.narrow(0, rank * size, size)
    if tp % heads:
        msg = f"{heads} heads cannot be shared by {tp} ranks"
        raise ValueError(msg)
    size = part.shape[0] // heads
    # More ranks than kv heads: each kv head serves tp / heads consecutive ranks (TRT-LLM duplicates it).
    return part.narrow(0, rank // (tp // heads) * size, size)


def _shard(tensor: torch.Tensor, rule: Rule, rank: int, tp: int) -> torch.Tensor:
    if rule.transpose and tensor.dim() == 2:  # noqa: PLR2004
        tensor = tensor.t()
    if rule.split is Split.REPLICATE:
        return tensor
    dim = 1 if rule.split is Split.IN else 0
    padded = _rows(tensor.shape[0], rule, tp)
    if padded != tensor.shape[0]:
        # Zero rows for the padded ids, as TRT-LLM pads decoder-only lm_heads; config.json keeps the real vocab_size.
        tensor = torch.cat([tensor, tensor.new_zeros(padded - tensor.shape[0], *tensor.shape[1:])])
    size = tensor.shape[dim] // tp
    return tensor.narrow(dim, rank * size, size)


def _qkv(parts: list[torch.Tensor], rule: Rule, rank: int, tp: int) -> torch.Tensor:
    if rule.transpose:
        parts = [p.t() if p.dim() == 2 else p for p in parts]  # noqa: PLR2004
    if rule.fused:
        parts = list(parts[0].chunk(3))
    return torch.cat([_head_share(p, heads, rank, tp) for p, heads in zip(parts, rule.heads, strict=True)])


def _producer(ckpt: Checkpoint, rule: Rule, rank: int, tp: int, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    def produce() -> torch.Tensor:
        if rule.split is Split.QKV and rule.heads:
            joined = _qkv([ckpt.load(src) for src in rule.sources], rule, rank, tp)
        else:
            # QKV without head counts reads q, k, v together (one layer); every other rule reads one tensor.
            parts = [_shard(ckpt.load(src), rule, rank, tp) for src in rule.sources]
            joined = parts[0] if len(parts) == 1 else torch.cat(parts)
        if rule.offset:
            joined = joined.float() + rule.offset  # in float32, then cast: a bf16 source loses nothing extra
        return joined.to(dtype).contiguous()

    return produce


def rank_plan(ckpt: Checkpoint, rules: list[Rule], rank: int, settings: Settings) -> list[Planned]:
    """One rank file's tensors for tensor-parallel rank ``rank``: shapes from the headers now, data when written."""
    tp, dtype = settings.tp_size, DTYPES[settings.dtype]
    return [
        Planned(rule.target, shard_shape(ckpt.info(rule.sources[0]).shape, rule, tp), dtype, _producer(ckpt, rule, rank, tp, dtype))
        for rule in rules
    ]


def check_sources(ckpt: Checkpoint, rules: list[Rule], dims: Mapping[str, int], what: str, where: str) -> None:
    """Every source tensor exists, is floating point and has the shape config.json implies: checked before writing."""
    missing = sorted({src for rule in rules for src in rule.sources if src not in ckpt})
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""  # noqa: PLR2004 - a readable line
        files = ", ".join(str(path) for path in ckpt.files) or str(ckpt.folder)
        raise UserError(where, f"{files}: no tensor {', '.join(missing[:3])}{more} (is it a complete {what} checkpoint?)")
    for rule in rules:
        for index, src in enumerate(rule.sources):
            expected = tuple(dims[d] for d in rule.shape)
            if rule.heads and not rule.fused:  # k and v of grouped-query attention have fewer rows than q
                expected = (_qkv_rows(rule, index, expected[0]), *expected[1:])
            info = ckpt.info(src)
            if info.shape != expected:
                raise UserError(where, f"{info.path}: tensor {src} has shape {list(info.shape)}, config.json implies {list(expected)}")
            if not info.dtype.is_floating_point:
                raise UserError(where, f"{info.path}: tensor {src} is {info.code}; only float checkpoints can be converted")
