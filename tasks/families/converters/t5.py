"""HF T5 / Flan-T5 -> a TensorRT-LLM 1.2 encoder-decoder checkpoint, streamed tensor by tensor.

Output (the layout of TRT-LLM's ``examples/models/core/enc_dec/convert_checkpoint.py``):
``encoder/config.json``, ``encoder/rank{r}.safetensors``, ``decoder/config.json`` and
``decoder/rank{r}.safetensors`` for every rank ``r < world_size``.

Tensor names, split rules and config keys are facts from TRT-LLM's public sources (the enc_dec
``convert_checkpoint.py`` and ``tensorrt_llm/models/enc_dec/model.py``); the code is this
project's own and never imports ``tensorrt_llm``.  Every output tensor is produced from the
source tensors it needs (q, k and v together for a fused QKV), cast, written and freed before
the next one, so peak memory is about the largest tensor (the embedding) plus its cast copy.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from tasks.core.errors import UserError
from tasks.families.converters import Converted, Settings, read_checkpoint_config
from tasks.families.converters.safetensors_stream import Checkpoint, open_checkpoint, write_safetensors
from tasks.families.converters.sharding import Rule, Split, check_sources, rank_plan, vocab_padding

log = logging.getLogger(__name__)

ARCHITECTURE = "T5ForConditionalGeneration"
MODEL_TYPE = "t5"


# Enums of tensorrt_llm.functional, written into config.json as their int values (TRT-LLM's
# convert_checkpoint.py stores ``.value``).  Values as defined in tensorrt_llm/functional.py of
# NVIDIA/TensorRT-LLM (identical in the 0.1x and 1.x sources searched, and in NVIDIA ModelOpt's copy).
class LayerNormType(IntEnum):
    LayerNorm = 0
    RmsNorm = 1
    GroupNorm = 2


class LayerNormPositionType(IntEnum):
    pre_layernorm = 0
    post_layernorm = 1


class MLPType(IntEnum):
    MLP = 0
    GatedMLP = 1
    FusedGatedMLP = 2


# transformers' T5Config defaults, for keys a config.json may leave out.
_HF_DEFAULTS: dict[str, Any] = {
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "relu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": None,
    # TRT-LLM reads n_positions with this fallback; T5 itself has no position limit.
    "n_positions": 512,
}


def check_settings(settings: Settings, where: str) -> None:
    """Generic checks, then what encoder-decoder models cannot do."""
    settings.check(where)
    if settings.pp_size > 1:
        why = "pipeline parallelism is not supported for encoder-decoder models (TRT-LLM's C++ runtime and Triton reject it)"
        raise UserError(where, f"pp_size {settings.pp_size}: {why}; use tp_size")


@dataclass(frozen=True)
class T5Spec:
    """What the converter needs from an HF T5 config.json."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    encoder_layers: int
    decoder_layers: int
    num_buckets: int
    max_distance: int
    norm_epsilon: float
    hidden_act: str
    gated: bool
    rescale_before_lm_head: bool
    max_positions: int
    pad_token_id: int
    eos_token_id: int
    bos_token_id: int | None
    decoder_start_token_id: int

    @property
    def dims(self) -> dict[str, int]:
        """Symbolic dimension names used by the weight table, with their sizes."""
        return {
            "d_model": self.d_model,
            "inner": self.num_heads * self.d_kv,
            "d_ff": self.d_ff,
            "vocab": self.vocab_size,
            "buckets": self.num_buckets,
            "heads": self.num_heads,
        }


def read_config(folder: Path, where: str) -> dict[str, Any]:
    """config.json of an HF checkpoint, checked to be a T5 encoder-decoder."""
    path = folder / "config.json"
    config = read_checkpoint_config(folder, where)
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if model_type != MODEL_TYPE or (architectures and ARCHITECTURE not in architectures):
        found = f"architectures {architectures}, model_type {model_type!r}"
        raise UserError(where, f"{path}: {found}; the t5 converter handles only {ARCHITECTURE} (model_type {MODEL_TYPE!r})")
    return config


def _positive_int(config: Mapping[str, Any], key: str, where: str) -> int:
    value = config.get(key, _HF_DEFAULTS.get(key))
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(where, f"config.json: {key} {value!r}: expected an integer >= 1")
    return value


def _token(config: Mapping[str, Any], key: str) -> int | None:
    value = config.get(key, _HF_DEFAULTS.get(key))
    # transformers allows a list of eos ids; TRT-LLM's config holds one int, the first is the primary one.
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) else None


def _activation(config: Mapping[str, Any], where: str) -> tuple[str, bool]:
    """(activation name, gated) as transformers derives them from ``feed_forward_proj``."""
    proj = str(config.get("feed_forward_proj", _HF_DEFAULTS["feed_forward_proj"]))
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):  # noqa: PLR2004 - "gated-<act>" has two parts
        raise UserError(where, f"config.json: feed_forward_proj {proj!r}: expected '<act>' or 'gated-<act>'")
    # transformers maps "gated-gelu" to the tanh approximation (gelu_new) for backward compatibility.
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    return str(config.get("dense_act_fn", act)), bool(config.get("is_gated_act", len(parts) == 2))  # noqa: PLR2004


def _rescale(config: Mapping[str, Any]) -> bool:
    # Original T5 scales the decoder output by d_model**-0.5 before the (tied) lm_head; v1.1/Flan do not.
    # transformers >= 5 writes that as scale_decoder_outputs (and always tie_word_embeddings: true);
    # older configs say it through tie_word_embeddings, which defaults to true.
    if "scale_decoder_outputs" in config:
        return bool(config["scale_decoder_outputs"])
    return bool(config.get("tie_word_embeddings", True))


def spec_from_config(config: Mapping[str, Any], where: str) -> T5Spec:
    """The converter's view of an HF T5 config.json."""
    hidden_act, gated = _activation(config, where)
    pad = _token(config, "pad_token_id")
    eos = _token(config, "eos_token_id")
    if pad is None or eos is None:
        raise UserError(where, f"config.json: pad_token_id {pad!r} / eos_token_id {eos!r}: expected integers")
    start = _token(config, "decoder_start_token_id")
    encoder_layers = _positive_int(config, "num_layers", where)
    return T5Spec(
        vocab_size=_positive_int(config, "vocab_size", where),
        d_model=_positive_int(config, "d_model", where),
        d_kv=_positive_int(config, "d_kv", where),
        d_ff=_positive_int(config, "d_ff", where),
        num_heads=_positive_int(config, "num_heads", where),
        encoder_layers=encoder_layers,
        decoder_layers=_positive_int(config, "num_decoder_layers", where) if config.get("num_decoder_layers") else encoder_layers,
        num_buckets=_positive_int(config, "relative_attention_num_buckets", where),
        max_distance=_positive_int(config, "relative_attention_max_distance", where),
        norm_epsilon=float(config.get("layer_norm_epsilon", _HF_DEFAULTS["layer_norm_epsilon"])),
        hidden_act=hidden_act,
        gated=gated,
        rescale_before_lm_head=_rescale(config),
        max_positions=_positive_int(config, "n_positions", where),
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=_token(config, "bos_token_id"),
        # T5 starts decoding from the pad token when the config does not say otherwise.
        decoder_start_token_id=pad if start is None else start,
    )


# Sizes that tensor parallelism splits, each with why it must divide evenly.
_TP_DIVISORS: tuple[tuple[str, Callable[[T5Spec], int], str], ...] = (
    ("num_heads", lambda s: s.num_heads, "each rank holds whole attention heads"),
    ("d_ff", lambda s: s.d_ff, "each rank holds an equal slice of the MLP"),
)


def check_parallel(spec: T5Spec, settings: Settings, where: str) -> None:
    for key, size, why in _TP_DIVISORS:
        if size(spec) % settings.tp_size:
            msg = f"{key} {size(spec)} is not divisible by tp_size {settings.tp_size} ({why}); pick a tp_size that divides it"
            raise UserError(where, msg)


# --- config.json -------------------------------------------------------------------------------

# Keys whose value is the same for every T5 (TRT-LLM's convert_checkpoint.py writes them so).
_FIXED_KEYS: dict[str, Any] = {
    "logits_dtype": "float32",
    "position_embedding_type": "relative",
    "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
    "use_parallel_embedding": False,
    "embedding_sharding_dim": 0,
    "has_position_embedding": False,
    "layernorm_type": LayerNormType.RmsNorm,
    "has_attention_qkvo_bias": False,
    "has_mlp_bias": False,
    "has_model_final_layernorm": True,
    "has_embedding_layernorm": False,
    "has_embedding_scale": False,
    "layernorm_position": LayerNormPositionType.pre_layernorm,
    "relative_attention": True,
    "model_type": MODEL_TYPE,
}
# Key order of TRT-LLM's files; num_key_value_heads is written for the encoder only.
_ENCODER_ORDER = (
    "architecture", "dtype", "logits_dtype", "num_hidden_layers", "num_attention_heads", "hidden_size", "norm_epsilon",
    "vocab_size", "position_embedding_type", "hidden_act", "quantization", "mapping", "use_parallel_embedding",
    "embedding_sharding_dim", "max_position_embeddings", "num_key_value_heads", "head_size", "has_position_embedding",
    "layernorm_type", "has_attention_qkvo_bias", "has_mlp_bias", "has_model_final_layernorm", "has_embedding_layernorm",
    "has_embedding_scale", "intermediate_size", "q_scaling", "layernorm_position", "mlp_type", "relative_attention",
    "max_distance", "num_buckets", "model_type", "gated_act",
)  # fmt: skip
_DECODER_ORDER = (
    *(key for key in _ENCODER_ORDER if key not in ("num_key_value_heads", "gated_act")),
    "rescale_before_lm_head", "encoder_hidden_size", "encoder_num_heads", "encoder_head_size", "skip_cross_kv",
    "use_implicit_relative_attention", "decoder_start_token_id", "eos_token_id", "bos_token_id", "pad_token_id", "gated_act",
)  # fmt: skip


def _derived_keys(spec: T5Spec, settings: Settings) -> dict[str, Any]:
    """Keys computed from the HF config and the settings (shared by encoder and decoder)."""
    return {
        "dtype": settings.dtype,
        "num_attention_heads": spec.num_heads,
        "hidden_size": spec.d_model,
        "norm_epsilon": spec.norm_epsilon,
        "vocab_size": spec.vocab_size,
        "hidden_act": spec.hidden_act,
        "mapping": {"world_size": settings.world_size, "tp_size": settings.tp_size, "pp_size": settings.pp_size},
        "max_position_embeddings": spec.max_positions,
        "num_key_value_heads": spec.num_heads,
        "head_size": spec.d_kv,
        "intermediate_size": spec.d_ff,
        # T5 does not scale q.k by 1/sqrt(head_size); TRT-LLM's kernels always do, so q_scaling cancels it.
        "q_scaling": 1 / math.sqrt(spec.d_kv),
        "mlp_type": MLPType.GatedMLP if spec.gated else MLPType.MLP,
        "max_distance": spec.max_distance,
        "num_buckets": spec.num_buckets,
        "gated_act": spec.gated,
        # Decoder-only keys (ignored by _ENCODER_ORDER).
        "rescale_before_lm_head": spec.rescale_before_lm_head,
        "encoder_hidden_size": spec.d_model,
        "encoder_num_heads": spec.num_heads,
        "encoder_head_size": spec.d_kv,
        "skip_cross_kv": False,
        "use_implicit_relative_attention": False,
        "decoder_start_token_id": spec.decoder_start_token_id,
        "eos_token_id": spec.eos_token_id,
        "bos_token_id": spec.bos_token_id,
        "pad_token_id": spec.pad_token_id,
    }


# --- weights ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """Encoder or decoder: where its HF tensors are and what TRT-LLM calls its modules."""

    name: str
    architecture: str
    attention: str  # TRT-LLM name of the self-attention module
    attention_norm: str
    ffn_index: int  # index of the FFN sub-layer in an HF block
    cross_attention: bool


ENCODER = Component("encoder", "EncoderModel", "attention", "attention_layernorm", 1, cross_attention=False)
DECODER = Component("decoder", "DecoderModel", "self_attention", "self_attention_layernorm", 2, cross_attention=True)
COMPONENTS = (ENCODER, DECODER)

_BLOCK = "{c}.block.{i}.layer"
# TRT-LLM reuses block 0's relative attention bias (HF [buckets, heads]) as [heads, buckets] in every layer.
_REL_BIAS = "{c}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
_LAYER = "transformer.layers.{i}"


def _attention_rules(module: str, norm: str, hf: str, hf_norm: str) -> tuple[Rule, ...]:
    return (
        Rule(f"{_LAYER}.{module}.qkv.weight", tuple(f"{hf}.{p}.weight" for p in "qkv"), Split.QKV, ("inner", "d_model")),
        Rule(f"{_LAYER}.{module}.dense.weight", (f"{hf}.o.weight",), Split.IN, ("d_model", "inner")),
        Rule(f"{_LAYER}.{norm}.weight", (hf_norm,), Split.REPLICATE, ("d_model",)),
    )


# HF's T5DenseGatedActDense computes act(wi_0 x) * (wi_1 x); TRT-LLM's GatedMLP computes act(fc x) * (gate x).
# So the activated branch wi_0 is fc and the linear branch wi_1 is gate (TRT-LLM's convert does the same).
_MLP_WEIGHTS: dict[bool, tuple[tuple[str, str, Split, tuple[str, ...]], ...]] = {
    False: (("fc", "wi", Split.OUT, ("d_ff", "d_model")), ("proj", "wo", Split.IN, ("d_model", "d_ff"))),
    True: (
        ("fc", "wi_0", Split.OUT, ("d_ff", "d_model")),
        ("gate", "wi_1", Split.OUT, ("d_ff", "d_model")),
        ("proj", "wo", Split.IN, ("d_model", "d_ff")),
    ),
}


def _mlp_rules(gated: bool) -> tuple[Rule, ...]:  # noqa: FBT001 - keyed like _MLP_WEIGHTS
    ffn = f"{_BLOCK}.{{ff}}"
    weights = tuple(
        Rule(f"{_LAYER}.mlp.{trt}.weight", (f"{ffn}.DenseReluDense.{hf}.weight",), split, shape)
        for trt, hf, split, shape in _MLP_WEIGHTS[gated]
    )
    return (*weights, Rule(f"{_LAYER}.mlp_layernorm.weight", (f"{ffn}.layer_norm.weight",), Split.REPLICATE, ("d_model",)))


def layer_rules(component: Component, gated: bool) -> tuple[Rule, ...]:  # noqa: FBT001 - a property of the model
    """The tensors of one TRT-LLM layer, as templates over ``{c}`` (component) and ``{i}`` (layer)."""
    c = component
    rules = _attention_rules(c.attention, c.attention_norm, f"{_BLOCK}.0.SelfAttention", f"{_BLOCK}.0.layer_norm.weight")
    rules += (Rule(f"{_LAYER}.{c.attention}.rel_attn_table", (_REL_BIAS,), Split.OUT, ("buckets", "heads"), transpose=True),)
    if c.cross_attention:
        rules += _attention_rules(
            "cross_attention", "cross_attention_layernorm", f"{_BLOCK}.1.EncDecAttention", f"{_BLOCK}.1.layer_norm.weight"
        )
    return rules + _mlp_rules(gated)


def component_rules(component: Component, spec: T5Spec, lm_head_source: str) -> list[Rule]:
    """Every tensor of one component's rank file, in writing order, with concrete HF names."""
    names = {"c": component.name, "ff": component.ffn_index}
    layers = spec.encoder_layers if component is ENCODER else spec.decoder_layers
    rules = [Rule("transformer.vocab_embedding.weight", ("shared.weight",), Split.REPLICATE, ("vocab", "d_model"))]
    for i in range(layers):
        rules += [rule.format(i=i, **names) for rule in layer_rules(component, spec.gated)]
    rules.append(Rule("transformer.ln_f.weight", (f"{component.name}.final_layer_norm.weight",), Split.REPLICATE, ("d_model",)))
    if component is DECODER:
        # TRT-LLM's DecoderModel (tensorrt_llm/models/enc_dec/model.py, main before the TensorRT backend left)
        # declares ColumnLinear(hidden_size, pad_vocab_size(vocab_size, tp_size)): ceil(vocab / tp) rows a rank.
        # Its convert_checkpoint.py pads BART's head to that with zero rows; the T5 path reshapes to vocab_size // tp,
        # which only works when tp divides the vocab.  Zero rows fit the declaration for every tp_size.
        rules.append(Rule("lm_head.weight", (lm_head_source,), Split.OUT, ("vocab", "d_model"), pad_rows=True))
        # The decoder also keeps a model-level table (unless implicit relative attention is chosen).
        rules.append(Rule("rel_attn_table", (_REL_BIAS.format(**names),), Split.OUT, ("buckets", "heads"), transpose=True))
    return rules


def lm_head_source(ckpt: Checkpoint) -> str:
    # Tied checkpoints (T5 v1.0, and everything transformers >= 5 saves tied) store no lm_head: it is the embedding.
    return "lm_head.weight" if "lm_head.weight" in ckpt else "shared.weight"


def component_config(component: Component, spec: T5Spec, settings: Settings) -> dict[str, Any]:
    """config.json of the encoder or decoder, keys in TRT-LLM's order."""
    values = {**_FIXED_KEYS, **_derived_keys(spec, settings), "architecture": component.architecture}
    values["num_hidden_layers"] = spec.encoder_layers if component is ENCODER else spec.decoder_layers
    order = _ENCODER_ORDER if component is ENCODER else _DECODER_ORDER
    return {key: values[key] for key in order}


def _write_component(ckpt: Checkpoint, component: Component, spec: T5Spec, settings: Settings, out: Path) -> tuple[int, int]:
    rules = component_rules(component, spec, lm_head_source(ckpt))
    folder = out / component.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(component_config(component, spec, settings), indent=4) + "\n", encoding="utf-8")
    written, total = 0, settings.world_size
    for rank in range(total):
        written += write_safetensors(folder / f"rank{rank}.safetensors", rank_plan(ckpt, rules, rank, settings))
        log.info("convert: %s rank %d/%d written (%d tensors, %.0f MB so far)", component.name, rank + 1, total, len(rules), written / 1e6)
    return written, len(rules) * total


def convert(source: Path, out: Path, settings: Settings, where: str) -> Converted:
    """Convert the HF T5 checkpoint in ``source`` into ``out/{encoder,decoder}``."""
    check_settings(settings, where)
    spec = spec_from_config(read_config(source, where), where)
    check_parallel(spec, settings, where)
    with open_checkpoint(source, where) as ckpt:
        for component in COMPONENTS:
            check_sources(ckpt, component_rules(component, spec, lm_head_source(ckpt)), spec.dims, "T5", where)
        padded = vocab_padding(spec.vocab_size, settings.tp_size)
        target = tensors = 0
        for component in COMPONENTS:
            size, count = _write_component(ckpt, component, spec, settings, out)
            target, tensors = target + size, tensors + count
        return Converted(ckpt.file_bytes, target, tensors, 2 * settings.world_size, padded)
