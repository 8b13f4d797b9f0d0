"""Encoder families: the tensors each one takes and returns, and how it is wrapped for export.

A family is named in the model file (``family: bert``).  Everything family-specific
lives here, so the export, engine, config and repo stages stay generic:

- ``bert``: a sentence encoder (MiniLM): text -> tokenizer -> mean/CLS pooled embedding.
- ``clip-vision``: CLIP's vision tower with its projection: image -> preprocessing -> ``image_embeds``.
- ``clip-text``: CLIP's text tower with its projection: text -> tokenizer -> ``text_embeds``, in the
  same space as ``clip-vision`` (cross-modal search pairs these two, never bert with clip).

The signature is read from the checkpoint (``config.json``), so dimensions are never hard-coded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import UserError
from tasks.families.checkpoint import load_pretrained

if TYPE_CHECKING:
    import numpy as np
    import torch

Feeds = dict[str, "np.ndarray[Any, Any]"]


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the encoder; ``dims`` exclude the batch dimension, -1 is the dynamic sequence."""

    name: str
    dtype: str  # Triton's name: TYPE_INT32, TYPE_FP32
    dims: tuple[int, ...]

    def pbtxt(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        return f'{{ name: "{self.name}" data_type: {self.dtype} dims: [ {dims} ] }}'

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["dtype"]), tuple(int(d) for d in data["dims"]))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    embedding: str  # the output the model's ensemble returns as ``embedding``

    @property
    def embedding_size(self) -> int:
        return next(t.dims[-1] for t in self.outputs if t.name == self.embedding)

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "embedding": self.embedding,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            tuple(TensorSpec.from_json(t) for t in data["outputs"]),
            str(data["embedding"]),
        )


@dataclass(frozen=True)
class Family:
    name: str
    modality: str  # "text" (tokenizer in front) or "image" (image preprocessing in front)
    signature: Callable[[Mapping[str, Any]], Signature]  # from config.json
    wrapper: Callable[[Path, Mapping[str, Any]], torch.nn.Module]  # (checkpoint, export block) -> module
    samples: Callable[[Signature, Mapping[str, Any], int], Feeds]  # (signature, config.json, seed) -> feeds


def _int(config: Mapping[str, Any], key: str, where: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"{where}/config.json", f"no integer {key}: not a checkpoint of this family")
    return value


def sub_config(config: Mapping[str, Any], part: str) -> Mapping[str, Any]:
    """A full CLIP checkpoint nests ``vision_config``/``text_config``; a tower saved alone does not."""
    nested = config.get(part)
    return nested if isinstance(nested, dict) else config


# ---- signatures ------------------------------------------------------------------------------

TOKENS_BERT = ("input_ids", "attention_mask", "token_type_ids")
TOKENS_CLIP = ("input_ids", "attention_mask")


def _token_inputs(names: tuple[str, ...]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, "TYPE_INT32", (-1,)) for name in names)


def bert_signature(config: Mapping[str, Any]) -> Signature:
    hidden = _int(config, "hidden_size", "bert")
    outputs = (TensorSpec("last_hidden_state", "TYPE_FP32", (-1, hidden)), TensorSpec("sentence_embedding", "TYPE_FP32", (hidden,)))
    return Signature(_token_inputs(TOKENS_BERT), outputs, "sentence_embedding")


def image_size(config: Mapping[str, Any]) -> int:
    return _int(sub_config(config, "vision_config"), "image_size", "clip-vision")


def clip_vision_signature(config: Mapping[str, Any]) -> Signature:
    size = image_size(config)
    projection = _int(config, "projection_dim", "clip-vision")
    pixels = TensorSpec("pixel_values", "TYPE_FP32", (3, size, size))
    return Signature((pixels,), (TensorSpec("image_embeds", "TYPE_FP32", (projection,)),), "image_embeds")


def clip_text_signature(config: Mapping[str, Any]) -> Signature:
    projection = _int(config, "projection_dim", "clip-text")
    return Signature(_token_inputs(TOKENS_CLIP), (TensorSpec("text_embeds", "TYPE_FP32", (projection,)),), "text_embeds")


# ---- export wrappers (torch imported only inside the export action) ---------------------------------


def _normalized(embeds: torch.Tensor, normalize: bool) -> torch.Tensor:  # noqa: FBT001
    import torch  # noqa: PLC0415

    return torch.nn.functional.normalize(embeds, p=2.0, dim=1) if normalize else embeds


def bert_wrapper(hf_dir: Path, settings: Mapping[str, Any]) -> torch.nn.Module:
    import torch  # noqa: PLC0415
    from transformers import AutoModel  # noqa: PLC0415

    # The pooler is never read (pooling happens below), so a checkpoint saved without it is whole.
    model = load_pretrained(AutoModel, hf_dir, unused=("pooler.",)).eval()
    pooling, normalize = settings["pooling"], settings["normalize"]

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.model(
                input_ids=input_ids.long(), attention_mask=attention_mask.long(), token_type_ids=token_type_ids.long()
            ).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return hidden, _normalized(pooled, normalize)

    return Pooled().eval()


def clip_vision_wrapper(hf_dir: Path, settings: Mapping[str, Any]) -> torch.nn.Module:
    import torch  # noqa: PLC0415
    from transformers import CLIPVisionModelWithProjection  # noqa: PLC0415

    # Loads the vision tower and visual projection out of a full CLIP checkpoint as well.
    model = load_pretrained(CLIPVisionModelWithProjection, hf_dir).eval()
    normalize = settings["normalize"]

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return _normalized(self.model(pixel_values=pixel_values).image_embeds, normalize)

    return Vision().eval()


def clip_text_wrapper(hf_dir: Path, settings: Mapping[str, Any]) -> torch.nn.Module:
    import torch  # noqa: PLC0415
    from transformers import CLIPTextModelWithProjection  # noqa: PLC0415

    model = load_pretrained(CLIPTextModelWithProjection, hf_dir).eval()
    normalize = settings["normalize"]

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            embeds = self.model(input_ids=input_ids.long(), attention_mask=attention_mask.long()).text_embeds
            return _normalized(embeds, normalize)

    return Text().eval()


# ---- sample inputs (export example and the ONNX-vs-PyTorch check) ------------------------------------


def token_samples(names: tuple[str, ...], vocab: int, lengths: list[int], seed: int) -> Feeds:
    """Random token ids with right padding, one row per length."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = rng.integers(1, vocab, size=(len(lengths), width), dtype=np.int32)
    mask = (np.arange(width)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    feeds = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {name: feeds[name] for name in names}


def _lengths(seed: int) -> list[int]:
    # Seed 0 is the export example (two rows of different lengths); others vary batch and width.
    return {0: [7, 5], 1: [4]}.get(seed, [5, 9, 13])


def _names(signature: Signature) -> tuple[str, ...]:
    return tuple(t.name for t in signature.inputs)


def text_samples(signature: Signature, config: Mapping[str, Any], seed: int) -> Feeds:
    """Token feeds for BERT or CLIP's text tower (its vocabulary nested in a full CLIP checkpoint)."""
    vocab = _int(sub_config(config, "text_config"), "vocab_size", "text encoder")
    return token_samples(_names(signature), vocab, _lengths(seed), seed)


def image_samples(signature: Signature, config: Mapping[str, Any], seed: int) -> Feeds:
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    size = image_size(config)
    shape = (len(_lengths(seed)), 3, size, size)
    return {_names(signature)[0]: rng.standard_normal(shape).astype(np.float32)}


FAMILIES: dict[str, Family] = {
    "bert": Family("bert", "text", bert_signature, bert_wrapper, text_samples),
    "clip-vision": Family("clip-vision", "image", clip_vision_signature, clip_vision_wrapper, image_samples),
    "clip-text": Family("clip-text", "text", clip_text_signature, clip_text_wrapper, text_samples),
}
SIGNATURE_FILE = "signature.json"


def family(name: str) -> Family:
    return FAMILIES[name]


def read_signature(export_dir: Path) -> Signature:
    """The signature the export stage wrote beside ``model.onnx``."""
    return Signature.from_json(json.loads((export_dir / SIGNATURE_FILE).read_text(encoding="utf-8")))
