"""HF GPT-2, Llama and Gemma -> TensorRT-LLM 1.2 decoder-only checkpoints, streamed tensor by tensor.

Output: ``config.json`` and ``rank{r}.safetensors`` for every rank ``r < tp_size * pp_size``
(rank ``r`` is tensor-parallel rank ``r % tp_size`` of pipeline stage ``r // tp_size``).
A pipeline stage holds its own layers, renumbered from 0; the first stage also holds the
embeddings, the last one the final norm and ``lm_head``.  Layers are divided as TRT-LLM 1.x
does (``torch.tensor_split``: the first ``layers % pp_size`` stages get one more).

Tensor names, split rules and config keys are facts from TRT-LLM's public sources
(``tensorrt_llm/models/{gpt,llama,gemma}`` and their ``convert_checkpoint.py``); the code is
this project's own and never imports ``tensorrt_llm``.  Per family:

- GPT-2: Conv1D weights are stored [in, out] and transposed; ``c_attn`` holds q, k and v
  stacked; learned positions; the head is tied to ``wte``.
- Llama: q, k, v fused with grouped-query heads (a kv head serves several ranks when there are
  fewer kv heads than ranks); HF's ``gate_proj`` (activated) is TRT-LLM's ``mlp.fc`` and
  ``up_proj`` its ``mlp.gate``; rope base and scaling from the config.
- Gemma: as Llama, plus RMSNorm scales stored as ``w + 1`` (HF keeps ``w`` and adds 1 at run
  time; TRT-LLM's RmsNorm does not), the head shares the embedding table, and the
  ``sqrt(hidden_size)`` embedding scale is applied by TRT-LLM's Gemma model at run time, so
  the table is written unscaled.  With tp_size > 1 the embedding is split by vocabulary rows
  (see ``parallel_embedding``).

The lm_head of every family has ``pad_vocab_size(vocab_size, tp_size)`` rows split by rank:
``{GPT,LLaMA,Gemma}ForCausalLM`` declare ``ColumnLinear(hidden, vocab_size_padded)`` and
TRT-LLM's converters pad the missing rows with zeros.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tasks.core.errors import UserError
from tasks.families.checkpoint import check_family
from tasks.families.converters import Converted, Settings, read_checkpoint_config
from tasks.families.converters.safetensors_stream import Checkpoint, open_checkpoint, write_safetensors
from tasks.families.converters.sharding import Rule, Split, check_sources, rank_plan, vocab_padding

log = logging.getLogger(__name__)

# HF activations -> TRT-LLM's names.  TRT-LLM's "gelu" is the tanh approximation.
_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu", "silu": "silu", "swish": "silu"}


@dataclass(frozen=True)
class DecoderSpec:
    """What the converter needs from an HF decoder-only config.json."""

    family: str
    architecture: str
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_size: int
    intermediate: int
    max_positions: int
    norm_epsilon: float
    hidden_act: str
    rotary_base: float
    rotary_scaling: Mapping[str, Any] | None

    @property
    def dims(self) -> dict[str, int]:
        """Symbolic dimension names used by the weight rules, with their sizes."""
        return {
            "hidden": self.hidden,
            "q_rows": self.heads * self.head_size,
            "qkv": (self.heads + 2 * self.kv_heads) * self.head_size,
            "inner": self.intermediate,
            "vocab": self.vocab_size,
            "positions": self.max_positions,
        }


def read_config(folder: Path, family: str, where: str) -> dict[str, Any]:
    config = read_checkpoint_config(folder, where)
    check_family(config, family, folder / "config.json", where)
    return config


def _int(config: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(where, f"config.json: {key}: expected an integer >= 1, got {value!r}")
    return value


def _activation(name: object, where: str) -> str:
    if name not in _ACTIVATIONS:
        raise UserError(where, f"config.json: activation {name!r} is not supported (known: {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[str(name)]


def rope_settings(config: Mapping[str, Any]) -> tuple[float, Mapping[str, Any] | None]:
    """Rope base and scaling: ``rope_theta``/``rope_scaling`` or transformers 5's ``rope_parameters``."""
    parameters = config.get("rope_parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    base = float(config.get("rope_theta") or parameters.get("rope_theta") or 10000.0)
    scaling = config.get("rope_scaling")
    if scaling is None and parameters.get("rope_type", "default") != "default":
        # TRT-LLM reads the scaling kind from "type", as transformers 4 wrote it.
        scaling = {"type": parameters["rope_type"], **{k: v for k, v in parameters.items() if k not in ("rope_theta", "rope_type")}}
    return base, scaling


def gpt2_spec(config: Mapping[str, Any], where: str) -> DecoderSpec:
    hidden, heads = _int(config, "n_embd", where), _int(config, "n_head", where)
    inner = config.get("n_inner") or 4 * hidden
    return DecoderSpec(
        "gpt2", "GPTForCausalLM", _int(config, "vocab_size", where), hidden, _int(config, "n_layer", where), heads, heads,
        hidden // heads, _int({"n_inner": inner}, "n_inner", where), _int(config, "n_positions", where),
        float(config.get("layer_norm_epsilon", 1e-5)), _activation(config.get("activation_function", "gelu_new"), where), 10000.0, None,
    )  # fmt: skip


def llama_spec(config: Mapping[str, Any], where: str, family: str = "llama") -> DecoderSpec:
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise UserError(where, f"config.json: {flag}: true is not supported by the {family} converter")
    hidden, heads = _int(config, "hidden_size", where), _int(config, "num_attention_heads", where)
    kv_heads = _int(config, "num_key_value_heads", where, heads)
    head_size = _int(config, "head_dim", where, hidden // heads) if config.get("head_dim") else hidden // heads
    act = config.get("hidden_activation") or config.get("hidden_act") or "silu"
    if family == "gemma":
        act = "gelu_pytorch_tanh"  # transformers' Gemma runs the tanh GELU whatever hidden_act says
    base, scaling = rope_settings(config)
    architecture = "GemmaForCausalLM" if family == "gemma" else "LlamaForCausalLM"
    return DecoderSpec(
        family, architecture, _int(config, "vocab_size", where), hidden, _int(config, "num_hidden_layers", where), heads, kv_heads,
        head_size, _int(config, "intermediate_size", where), _int(config, "max_position_embeddings", where),
        float(config.get("rms_norm_eps", 1e-6)), _activation(act, where), base, scaling,
    )  # fmt: skip


SPECS: dict[str, Callable[[Mapping[str, Any], str], DecoderSpec]] = {
    "gpt2": gpt2_spec,
    "llama": llama_spec,
    "gemma": lambda config, where: llama_spec(config, where, "gemma"),
}


def parallel_embedding(spec: DecoderSpec, settings: Settings) -> bool:
    """Whether the embedding table is split by vocabulary rows between tensor-parallel ranks.

    TRT-LLM's GemmaConfig (tensorrt_llm/models/gemma/config.py) sets ``use_parallel_embedding =
    mapping.tp_size > 1`` whatever config.json says, and its Embedding then declares
    ``ceil(vocab / tp)`` rows per rank on ``embedding_sharding_dim`` 0.  GPT-2 and Llama take the
    value from config.json (default false, as their convert_checkpoint.py writes it), so their
    table stays whole on every rank.
    """
    return spec.family == "gemma" and settings.tp_size > 1


def check_parallel(spec: DecoderSpec, settings: Settings, where: str) -> None:
    """Every split must come out whole, on every rank."""
    tp, pp = settings.tp_size, settings.pp_size
    if parallel_embedding(spec, settings) and spec.vocab_size % tp:
        # TRT-LLM's Gemma converter asserts ``vocab_size % tp_size == 0`` before it splits the table; it does not pad.
        msg = (
            f"convert.tp_size {tp} does not divide vocab_size {spec.vocab_size}: with tp_size > 1 Gemma splits its "
            "shared embedding table by vocabulary rows; pick a tp_size that divides the vocabulary"
        )
        raise UserError(where, msg)
    for key, size in (("num_attention_heads", spec.heads), ("intermediate_size", spec.intermediate)):
        if size % tp:
            raise UserError(where, f"{key} {size} is not divisible by tp_size {tp}; pick a tp_size that divides it")
    if spec.kv_heads % tp and tp % spec.kv_heads:
        msg = f"num_key_value_heads {spec.kv_heads} and tp_size {tp}: one must divide the other (kv heads are split or shared by ranks)"
        raise UserError(where, msg)
    if pp > spec.layers:
        raise UserError(where, f"pp_size {pp} is more than the {spec.layers} layers; every pipeline stage needs a layer")


def stage_layers(layers: int, pp_rank: int, pp: int) -> list[int]:
    """The layers of one pipeline stage (TRT-LLM 1.x: the first ``layers % pp`` stages get one more)."""
    return [int(i) for i in torch.tensor_split(torch.arange(layers), pp)[pp_rank]]


# --- weights ------------------------------------------------------------------------------------

_LAYER = "transformer.layers.{i}"


def _gpt2_layer(p: str, spec: DecoderSpec) -> list[Rule]:
    heads = (spec.heads,) * 3
    return [
        Rule(f"{_LAYER}.input_layernorm.weight", (f"{p}ln_1.weight",), Split.REPLICATE, ("hidden",)),
        Rule(f"{_LAYER}.input_layernorm.bias", (f"{p}ln_1.bias",), Split.REPLICATE, ("hidden",)),
        Rule(
            f"{_LAYER}.attention.qkv.weight", (f"{p}attn.c_attn.weight",), Split.QKV, ("hidden", "qkv"),
            transpose=True, heads=heads, fused=True,
        ),
        Rule(f"{_LAYER}.attention.qkv.bias", (f"{p}attn.c_attn.bias",), Split.QKV, ("qkv",), heads=heads, fused=True),
        Rule(f"{_LAYER}.attention.dense.weight", (f"{p}attn.c_proj.weight",), Split.IN, ("q_rows", "hidden"), transpose=True),
        Rule(f"{_LAYER}.attention.dense.bias", (f"{p}attn.c_proj.bias",), Split.REPLICATE, ("hidden",)),
        Rule(f"{_LAYER}.post_layernorm.weight", (f"{p}ln_2.weight",), Split.REPLICATE, ("hidden",)),
        Rule(f"{_LAYER}.post_layernorm.bias", (f"{p}ln_2.bias",), Split.REPLICATE, ("hidden",)),
        Rule(f"{_LAYER}.mlp.fc.weight", (f"{p}mlp.c_fc.weight",), Split.OUT, ("hidden", "inner"), transpose=True),
        Rule(f"{_LAYER}.mlp.fc.bias", (f"{p}mlp.c_fc.bias",), Split.OUT, ("inner",)),
        Rule(f"{_LAYER}.mlp.proj.weight", (f"{p}mlp.c_proj.weight",), Split.IN, ("inner", "hidden"), transpose=True),
        Rule(f"{_LAYER}.mlp.proj.bias", (f"{p}mlp.c_proj.bias",), Split.REPLICATE, ("hidden",)),
    ]  # fmt: skip


def _llama_layer(p: str, spec: DecoderSpec) -> list[Rule]:
    norm = 1.0 if spec.family == "gemma" else 0.0
    qkv = tuple(f"{p}self_attn.{x}_proj.weight" for x in "qkv")
    return [
        Rule(f"{_LAYER}.input_layernorm.weight", (f"{p}input_layernorm.weight",), Split.REPLICATE, ("hidden",), offset=norm),
        Rule(f"{_LAYER}.attention.qkv.weight", qkv, Split.QKV, ("q_rows", "hidden"), heads=(spec.heads, spec.kv_heads, spec.kv_heads)),
        Rule(f"{_LAYER}.attention.dense.weight", (f"{p}self_attn.o_proj.weight",), Split.IN, ("hidden", "q_rows")),
        Rule(f"{_LAYER}.post_layernorm.weight", (f"{p}post_attention_layernorm.weight",), Split.REPLICATE, ("hidden",), offset=norm),
        # HF computes down(act(gate_proj x) * up_proj x); TRT-LLM's GatedMLP computes proj(act(fc x) * gate x).
        Rule(f"{_LAYER}.mlp.fc.weight", (f"{p}mlp.gate_proj.weight",), Split.OUT, ("inner", "hidden")),
        Rule(f"{_LAYER}.mlp.gate.weight", (f"{p}mlp.up_proj.weight",), Split.OUT, ("inner", "hidden")),
        Rule(f"{_LAYER}.mlp.proj.weight", (f"{p}mlp.down_proj.weight",), Split.IN, ("hidden", "inner")),
    ]  # fmt: skip


@dataclass(frozen=True)
class Names:
    """Where a family keeps its tensors in an HF checkpoint (the prefix depends on the class that saved it)."""

    layer: str
    embedding: str
    positions: str | None
    final_norm: tuple[str, ...]
    lm_head: str


def hf_names(ckpt: Checkpoint, spec: DecoderSpec) -> Names:
    if spec.family == "gpt2":
        # GPT2LMHeadModel saves "transformer.h.0...", GPT2Model (the Hub's gpt2 files) "h.0...".
        p = "transformer." if "transformer.wte.weight" in ckpt else ""
        head = "lm_head.weight" if "lm_head.weight" in ckpt else f"{p}wte.weight"
        return Names(f"{p}h.{{l}}.", f"{p}wte.weight", f"{p}wpe.weight", (f"{p}ln_f.weight", f"{p}ln_f.bias"), head)
    p = "model." if "model.embed_tokens.weight" in ckpt else ""
    # Gemma always shares the table; Llama only when tie_word_embeddings saved no separate head.
    tied = spec.family == "gemma" or "lm_head.weight" not in ckpt
    head = f"{p}embed_tokens.weight" if tied else "lm_head.weight"
    return Names(f"{p}layers.{{l}}.", f"{p}embed_tokens.weight", None, (f"{p}norm.weight",), head)


def _final_rules(names: Names, spec: DecoderSpec) -> list[Rule]:
    norm = 1.0 if spec.family == "gemma" else 0.0
    suffixes = ("weight", "bias")
    rules = [
        Rule(f"transformer.ln_f.{suffix}", (source,), Split.REPLICATE, ("hidden",), offset=norm if suffix == "weight" else 0.0)
        for suffix, source in zip(suffixes, names.final_norm, strict=False)
    ]
    return [*rules, Rule("lm_head.weight", (names.lm_head,), Split.OUT, ("vocab", "hidden"), pad_rows=True)]


def stage_rules(names: Names, spec: DecoderSpec, layers: list[int], *, first: bool, last: bool, vocab_split: bool = False) -> list[Rule]:
    """Every tensor of one pipeline stage's rank files, in writing order, with concrete HF names.

    ``vocab_split``: the embedding table is divided by vocabulary rows (``parallel_embedding``).
    """
    rules: list[Rule] = []
    if first:
        split = Split.OUT if vocab_split else Split.REPLICATE
        rules.append(Rule("transformer.vocab_embedding.weight", (names.embedding,), split, ("vocab", "hidden")))
        if names.positions is not None:
            rules.append(Rule("transformer.position_embedding.weight", (names.positions,), Split.REPLICATE, ("positions", "hidden")))
    layer_rules = _gpt2_layer if spec.family == "gpt2" else _llama_layer
    for local, layer in enumerate(layers):
        rules += [rule.format(i=local) for rule in layer_rules(names.layer.format(l=layer), spec)]
    return rules + (_final_rules(names, spec) if last else [])


# --- config.json ---------------------------------------------------------------------------------


def checkpoint_config(spec: DecoderSpec, settings: Settings) -> dict[str, Any]:
    """TRT-LLM's PretrainedConfig keys, plus the family's own."""
    config: dict[str, Any] = {
        "architecture": spec.architecture,
        "dtype": settings.dtype,
        "logits_dtype": "float32",
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_positions,
        "hidden_size": spec.hidden,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_size": spec.head_size,
        "hidden_act": spec.hidden_act,
        "intermediate_size": spec.intermediate,
        "norm_epsilon": spec.norm_epsilon,
        "position_embedding_type": "learned_absolute" if spec.family == "gpt2" else "rope_gpt_neox",
        "use_parallel_embedding": parallel_embedding(spec, settings),
        "embedding_sharding_dim": 0,
        "mapping": {"world_size": settings.world_size, "tp_size": settings.tp_size, "pp_size": settings.pp_size},
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
    }
    if spec.family == "gpt2":
        config |= {"bias": True, "apply_query_key_layer_scaling": False, "rotary_pct": 0.0, "q_scaling": 1.0, "gpt_variant": "gpt2"}
    else:
        config |= {"rotary_base": spec.rotary_base, "rotary_scaling": spec.rotary_scaling, "attn_bias": False, "mlp_bias": False}
    if spec.family == "gemma":
        config["share_embedding_table"] = True
    return config


# --- writing -------------------------------------------------------------------------------------


def _write_ranks(ckpt: Checkpoint, names: Names, spec: DecoderSpec, settings: Settings, out: Path) -> tuple[int, int]:
    written = tensors = 0
    tp, pp = settings.tp_size, settings.pp_size
    vocab_split = parallel_embedding(spec, settings)
    for rank in range(settings.world_size):
        pp_rank = rank // tp
        layers = stage_layers(spec.layers, pp_rank, pp)
        rules = stage_rules(names, spec, layers, first=pp_rank == 0, last=pp_rank == pp - 1, vocab_split=vocab_split)
        written += write_safetensors(out / f"rank{rank}.safetensors", rank_plan(ckpt, rules, rank % tp, settings))
        tensors += len(rules)
        log.info("convert: rank %d/%d written (%d tensors, %.0f MB so far)", rank + 1, settings.world_size, len(rules), written / 1e6)
    return written, tensors


def convert_family(family: str, source: Path, out: Path, settings: Settings, where: str) -> Converted:
    """Convert the HF checkpoint in ``source`` into ``out/config.json`` + ``out/rank{r}.safetensors``."""
    settings.check(where)
    spec = SPECS[family](read_config(source, family, where), where)
    check_parallel(spec, settings, where)
    with open_checkpoint(source, where) as ckpt:
        names = hf_names(ckpt, spec)
        every = stage_rules(names, spec, list(range(spec.layers)), first=True, last=True)
        check_sources(ckpt, every, spec.dims, family, where)
        padded = vocab_padding(spec.vocab_size, settings.tp_size)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(checkpoint_config(spec, settings), indent=4) + "\n", encoding="utf-8")
        written, tensors = _write_ranks(ckpt, names, spec, settings, out)
        return Converted(ckpt.file_bytes, written, tensors, settings.world_size, padded)


def convert_gpt2(source: Path, out: Path, settings: Settings, where: str) -> Converted:
    return convert_family("gpt2", source, out, settings, where)


def convert_llama(source: Path, out: Path, settings: Settings, where: str) -> Converted:
    return convert_family("llama", source, out, settings, where)


def convert_gemma(source: Path, out: Path, settings: Settings, where: str) -> Converted:
    return convert_family("gemma", source, out, settings, where)
