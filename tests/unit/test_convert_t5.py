"""The T5 -> TRT-LLM converter, checked by numerics: a forward pass built only from the converted tensors
(fused QKV, fc/gate order, relative attention table, q_scaling, lm_head rescale) equals HF's T5.

Also: tensor-parallel shards reassemble exactly, config.json keys and values, dtype casts, user errors,
and the streaming safetensors reader/writer (round trip and peak memory near one tensor).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn import functional

from tasks.commands.conformance.fixtures import build_tiny_t5
from tasks.core.errors import UserError
from tasks.core.stage import Stage, StageContext
from tasks.families.converters import Settings, sharding, t5
from tasks.families.converters.safetensors_stream import Planned, open_checkpoint, write_safetensors
from tasks.stages import convert as convert_stage

Tensors = dict[str, torch.Tensor]
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": functional.relu,
    "gelu_new": lambda x: functional.gelu(x, approximate="tanh"),
}
WHERE = "convert:t5-test"


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """flan (gated-gelu, 16 buckets), v1_0 (relu, tied + rescaled) and flan_untied (a separate lm_head, as the Hub's flan-t5 has)."""
    root = tmp_path_factory.mktemp("t5")
    found = {variant: build_tiny_t5(root / variant, variant=variant) for variant in ("flan", "v1_0")}
    found["flan_untied"] = _untie(found["flan"], root / "flan_untied")
    return found


def _untie(source: Path, folder: Path) -> Path:
    """A copy of ``source`` saved the way transformers 4 saved Flan-T5: tie_word_embeddings false, its own lm_head."""
    folder.mkdir()
    tensors = load_file(source / "model.safetensors")
    torch.manual_seed(7)
    tensors["lm_head.weight"] = torch.randn_like(tensors["shared.weight"])
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config.pop("scale_decoder_outputs", None)
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def convert(source: Path, out: Path, dtype: str = "float32", tp: int = 1, pp: int = 1) -> Path:
    t5.convert(source, out, Settings(dtype, tp, pp), WHERE)
    return out


@pytest.fixture(scope="module")
def converted(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("converted")
    return {name: convert(path, root / name) for name, path in checkpoints.items()}


def hf_model(folder: Path) -> Any:
    from transformers import T5ForConditionalGeneration

    # eager: the attention whose position_bias and additive mask semantics the reference mirrors
    return T5ForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()  # type: ignore[no-untyped-call]


def rank_tensors(folder: Path, world: int) -> list[Tensors]:
    return [load_file(folder / f"rank{r}.safetensors") for r in range(world)]


def config_of(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    return config


# --- a reference T5 built from the converted tensors alone ------------------------------------------


def bucket(relative: torch.Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's relative position buckets (mesh-tensorflow): exact for short distances, log-spaced up to max_distance.

    ``relative`` is key position - query position.  Bidirectional attention spends half the
    buckets on keys after the query; causal attention only sees keys before it.
    """
    if bidirectional:
        half = num_buckets // 2
        offset = torch.where(relative > 0, half, 0)
        distance = relative.abs()
    else:
        half = num_buckets
        offset = torch.zeros_like(relative)
        distance = (-relative).clamp(min=0)
    exact = half // 2
    log_ratio = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return offset + torch.where(distance < exact, distance, far)


def position_bias(table: torch.Tensor, q_len: int, k_len: int, cfg: dict[str, Any], *, bidirectional: bool) -> torch.Tensor:
    """[heads, q, k] bias from a rel_attn_table of shape [heads, num_buckets]."""
    relative = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
    buckets = bucket(relative, bidirectional=bidirectional, num_buckets=cfg["num_buckets"], max_distance=cfg["max_distance"])
    return table[:, buckets]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def attention(
    x: torch.Tensor, memory: torch.Tensor, w: Tensors, prefix: str, cfg: dict[str, Any], *, bias: torch.Tensor | None
) -> torch.Tensor:
    """Multi-head attention from a fused [q; k; v] weight; TRT-LLM scales scores by 1 / (sqrt(head_size) * q_scaling)."""
    heads, size = cfg["num_attention_heads"], cfg["head_size"]
    wq, wk, wv = w[f"{prefix}.qkv.weight"].chunk(3)

    def split_heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(*t.shape[:2], heads, size).transpose(1, 2)

    q, k, v = split_heads(x @ wq.T), split_heads(memory @ wk.T), split_heads(memory @ wv.T)
    scores = q @ k.transpose(-1, -2) / (math.sqrt(size) * float(cfg["q_scaling"]))
    if bias is not None:
        scores = scores + bias
    context = scores.softmax(-1) @ v
    return context.transpose(1, 2).reshape(*x.shape[:2], heads * size) @ w[f"{prefix}.dense.weight"].T


def mlp(x: torch.Tensor, w: Tensors, prefix: str, cfg: dict[str, Any]) -> torch.Tensor:
    """TRT-LLM MLP / GatedMLP: act(fc x) [* gate x], then proj."""
    act = ACTIVATIONS[cfg["hidden_act"]]
    inner: torch.Tensor = act(x @ w[f"{prefix}.fc.weight"].T)
    if cfg["mlp_type"] == t5.MLPType.GatedMLP:
        inner = inner * (x @ w[f"{prefix}.gate.weight"].T)
    return inner @ w[f"{prefix}.proj.weight"].T


def encoder_layer(x: torch.Tensor, w: Tensors, i: int, cfg: dict[str, Any]) -> torch.Tensor:
    p, eps = f"transformer.layers.{i}", cfg["norm_epsilon"]
    bias = position_bias(w[f"{p}.attention.rel_attn_table"], x.shape[1], x.shape[1], cfg, bidirectional=True)
    normed = rms_norm(x, w[f"{p}.attention_layernorm.weight"], eps)
    x = x + attention(normed, normed, w, f"{p}.attention", cfg, bias=bias)
    return x + mlp(rms_norm(x, w[f"{p}.mlp_layernorm.weight"], eps), w, f"{p}.mlp", cfg)


def decoder_layer(x: torch.Tensor, encoded: torch.Tensor, w: Tensors, i: int, cfg: dict[str, Any]) -> torch.Tensor:
    p, eps, n = f"transformer.layers.{i}", cfg["norm_epsilon"], x.shape[1]
    causal = torch.full((n, n), float("-inf")).triu(1)
    bias = position_bias(w[f"{p}.self_attention.rel_attn_table"], n, n, cfg, bidirectional=False) + causal
    normed = rms_norm(x, w[f"{p}.self_attention_layernorm.weight"], eps)
    x = x + attention(normed, normed, w, f"{p}.self_attention", cfg, bias=bias)
    x = x + attention(rms_norm(x, w[f"{p}.cross_attention_layernorm.weight"], eps), encoded, w, f"{p}.cross_attention", cfg, bias=None)
    return x + mlp(rms_norm(x, w[f"{p}.mlp_layernorm.weight"], eps), w, f"{p}.mlp", cfg)


def logits(hidden: torch.Tensor, w: Tensors, cfg: dict[str, Any]) -> torch.Tensor:
    """Final norm, T5 v1.0's d_model**-0.5 rescale when configured, lm_head (padded vocab rows dropped)."""
    x = rms_norm(hidden, w["transformer.ln_f.weight"], cfg["norm_epsilon"])
    if cfg["rescale_before_lm_head"]:
        x = x * cfg["hidden_size"] ** -0.5
    return (x @ w["lm_head.weight"].T)[..., : cfg["vocab_size"]]


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


VARIANTS = ("flan", "v1_0", "flan_untied")


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_blocks_match_hf(variant: str, checkpoints: dict[str, Path], converted: dict[str, Path]) -> None:
    model = hf_model(checkpoints[variant])
    cfg, w = config_of(converted[variant] / "encoder"), load_file(converted[variant] / "encoder/rank0.safetensors")
    torch.manual_seed(1)
    # 80 positions: past max_distance, so the log-spaced and clamped buckets are exercised too.
    x = torch.randn(2, 80, cfg["hidden_size"])
    hf_bias = model.encoder.block[0].layer[0].SelfAttention.compute_bias(80, 80)
    assert cfg["num_hidden_layers"] == len(model.encoder.block) == 2
    with torch.no_grad():
        for i, block in enumerate(model.encoder.block):
            want = block(x, position_bias=hf_bias)[0]
            assert rel_error(encoder_layer(x, w, i, cfg), want) < 1e-5, f"encoder layer {i}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoder_blocks_match_hf(variant: str, checkpoints: dict[str, Path], converted: dict[str, Path]) -> None:
    model = hf_model(checkpoints[variant])
    cfg, w = config_of(converted[variant] / "decoder"), load_file(converted[variant] / "decoder/rank0.safetensors")
    torch.manual_seed(2)
    x, encoded = torch.randn(2, 70, cfg["hidden_size"]), torch.randn(2, 11, cfg["hidden_size"])
    hf_bias = model.decoder.block[0].layer[0].SelfAttention.compute_bias(70, 70)
    causal = torch.full((70, 70), torch.finfo(torch.float32).min).triu(1)[None, None]
    assert cfg["num_hidden_layers"] == len(model.decoder.block) == 2
    with torch.no_grad():
        for i, block in enumerate(model.decoder.block):
            want = block(x, attention_mask=causal, position_bias=hf_bias, encoder_hidden_states=encoded)[0]
            assert rel_error(decoder_layer(x, encoded, w, i, cfg), want) < 1e-5, f"decoder layer {i}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_model_logits_match_hf(variant: str, checkpoints: dict[str, Path], converted: dict[str, Path]) -> None:
    """Embedding, every layer, ln_f, rescale and lm_head together: the logits of HF's forward pass."""
    model = hf_model(checkpoints[variant])
    enc_cfg, dec_cfg = config_of(converted[variant] / "encoder"), config_of(converted[variant] / "decoder")
    enc_w, dec_w = load_file(converted[variant] / "encoder/rank0.safetensors"), load_file(converted[variant] / "decoder/rank0.safetensors")
    torch.manual_seed(3)
    ids, dec_ids = torch.randint(0, enc_cfg["vocab_size"], (2, 13)), torch.randint(0, enc_cfg["vocab_size"], (2, 6))
    with torch.no_grad():
        want = model(input_ids=ids, decoder_input_ids=dec_ids).logits
        x = enc_w["transformer.vocab_embedding.weight"][ids]
        for i in range(enc_cfg["num_hidden_layers"]):
            x = encoder_layer(x, enc_w, i, enc_cfg)
        encoded = rms_norm(x, enc_w["transformer.ln_f.weight"], enc_cfg["norm_epsilon"])
        y = dec_w["transformer.vocab_embedding.weight"][dec_ids]
        for i in range(dec_cfg["num_hidden_layers"]):
            y = decoder_layer(y, encoded, dec_w, i, dec_cfg)
        got = logits(y, dec_w, dec_cfg)
    assert got.shape == want.shape
    assert rel_error(got, want) < 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_final_norm_and_lm_head_match_hf(variant: str, checkpoints: dict[str, Path], converted: dict[str, Path]) -> None:
    model = hf_model(checkpoints[variant])
    cfg, w = config_of(converted[variant] / "decoder"), load_file(converted[variant] / "decoder/rank0.safetensors")
    torch.manual_seed(4)
    hidden = torch.randn(2, 5, cfg["hidden_size"])
    scale = cfg["hidden_size"] ** -0.5 if model.config.scale_decoder_outputs else 1.0
    with torch.no_grad():
        want = model.lm_head(model.decoder.final_layer_norm(hidden) * scale)
        assert rel_error(logits(hidden, w, cfg), want) < 1e-5
    expected_rescale = variant == "v1_0"
    assert cfg["rescale_before_lm_head"] is expected_rescale
    if variant == "flan_untied":
        assert not torch.equal(w["lm_head.weight"], w["transformer.vocab_embedding.weight"])
    else:  # tied: the lm_head is the shared embedding
        assert torch.equal(w["lm_head.weight"], w["transformer.vocab_embedding.weight"])


def test_gated_mlp_order_is_wi0_fc_wi1_gate(checkpoints: dict[str, Path], converted: dict[str, Path]) -> None:
    """Swapping fc and gate must break the numerics: the test above really pins which branch is activated."""
    model = hf_model(checkpoints["flan"])
    cfg, w = config_of(converted["flan"] / "encoder"), load_file(converted["flan"] / "encoder/rank0.safetensors")
    p = "transformer.layers.0.mlp"
    swapped = {**w, f"{p}.fc.weight": w[f"{p}.gate.weight"], f"{p}.gate.weight": w[f"{p}.fc.weight"]}
    torch.manual_seed(5)
    x = torch.randn(1, 7, cfg["hidden_size"])
    with torch.no_grad():
        want = model.encoder.block[0].layer[1].DenseReluDense(x)
        assert rel_error(mlp(x, w, p, cfg), want) < 1e-5
        assert rel_error(mlp(x, swapped, p, cfg), want) > 1e-2


# --- tensor parallelism ---------------------------------------------------------------------------


def reassemble(name: str, shards: list[torch.Tensor]) -> torch.Tensor:
    """The full tensor from per-rank shards, undoing each split rule."""
    if name.endswith(".qkv.weight"):  # each rank holds [q_r; k_r; v_r]
        width = shards[0].shape[1]
        return torch.cat([s.view(3, -1, width) for s in shards], dim=1).reshape(-1, width)
    if name.endswith((".dense.weight", "mlp.proj.weight")):
        return torch.cat(shards, dim=1)
    if name.endswith(("mlp.fc.weight", "mlp.gate.weight", "rel_attn_table", "lm_head.weight")):
        return torch.cat(shards, dim=0)
    assert all(torch.equal(s, shards[0]) for s in shards), f"{name} should be replicated"
    return shards[0]


@pytest.mark.parametrize("component", ["encoder", "decoder"])
def test_tp2_shards_reassemble_to_tp1(component: str, checkpoints: dict[str, Path], converted: dict[str, Path], tmp_path: Path) -> None:
    out = convert(checkpoints["flan_untied"], tmp_path / "tp2", tp=2)
    full = load_file(converted["flan_untied"] / component / "rank0.safetensors")
    shards = rank_tensors(out / component, 2)
    assert set(shards[0]) == set(shards[1]) == set(full)
    heads = config_of(out / component)["num_attention_heads"]
    assert shards[0]["transformer.layers.0.mlp.fc.weight"].shape[0] == 48
    for name in full:
        if "rel_attn_table" in name:
            assert shards[0][name].shape[0] == heads // 2
        assert torch.equal(reassemble(name, [s[name] for s in shards]), full[name]), name
    assert config_of(out / component)["mapping"] == {"world_size": 2, "tp_size": 2, "pp_size": 1}


def test_vocab_not_divisible_by_tp_is_padded_with_zero_rows(tmp_path: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    # An odd vocab, so tp_size 2 needs a padded lm_head (T5Config's typed fields omit tie_word_embeddings).
    shape: dict[str, Any] = {"vocab_size": 117, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_heads": 4}
    config = T5Config(**shape, feed_forward_proj="gated-gelu", tie_word_embeddings=False)  # type: ignore[call-arg]
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "hf")
    result = t5.convert(tmp_path / "hf", tmp_path / "tp2", Settings("float32", 2, 1), WHERE)
    assert result.vocab_padded == 118
    t5.convert(tmp_path / "hf", tmp_path / "tp1", Settings("float32", 1, 1), WHERE)
    ranks = rank_tensors(tmp_path / "tp2/decoder", 2)
    shards = [s["lm_head.weight"] for s in ranks]
    # TRT-LLM's DecoderModel declares its lm_head with pad_vocab_size(117, 2) = 118 rows: 59 a rank.
    assert [tuple(s.shape) for s in shards] == [(59, 32), (59, 32)]
    full = torch.cat(shards)
    single = load_file(tmp_path / "tp1/decoder/rank0.safetensors")
    assert torch.equal(full[:117], single["lm_head.weight"])
    assert not full[117:].any()
    decoder_config = config_of(tmp_path / "tp2/decoder")
    assert decoder_config["vocab_size"] == 117
    # The embedding is not parallel (use_parallel_embedding false): every rank holds the whole, unpadded table.
    assert decoder_config["use_parallel_embedding"] is False
    for rank in ranks:
        assert torch.equal(rank["transformer.vocab_embedding.weight"], single["transformer.vocab_embedding.weight"])


# --- config.json ----------------------------------------------------------------------------------

COMMON_KEYS = [
    "architecture", "dtype", "logits_dtype", "num_hidden_layers", "num_attention_heads", "hidden_size", "norm_epsilon", "vocab_size",
    "position_embedding_type", "hidden_act", "quantization", "mapping", "use_parallel_embedding", "embedding_sharding_dim",
    "max_position_embeddings",
]  # fmt: skip
STRUCTURE_KEYS = [
    "head_size", "has_position_embedding", "layernorm_type", "has_attention_qkvo_bias", "has_mlp_bias", "has_model_final_layernorm",
    "has_embedding_layernorm", "has_embedding_scale", "intermediate_size", "q_scaling", "layernorm_position", "mlp_type",
    "relative_attention", "max_distance", "num_buckets", "model_type",
]  # fmt: skip
ENCODER_KEYS = [*COMMON_KEYS, "num_key_value_heads", *STRUCTURE_KEYS, "gated_act"]
DECODER_KEYS = [
    *COMMON_KEYS, *STRUCTURE_KEYS, "rescale_before_lm_head", "encoder_hidden_size", "encoder_num_heads", "encoder_head_size",
    "skip_cross_kv", "use_implicit_relative_attention", "decoder_start_token_id", "eos_token_id", "bos_token_id", "pad_token_id",
    "gated_act",
]  # fmt: skip


def test_config_keys_and_values_flan(converted: dict[str, Path]) -> None:
    enc, dec = config_of(converted["flan"] / "encoder"), config_of(converted["flan"] / "decoder")
    assert list(enc) == ENCODER_KEYS
    assert list(dec) == DECODER_KEYS
    shared = {
        "dtype": "float32", "logits_dtype": "float32", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
        "norm_epsilon": 1e-6, "vocab_size": 116, "position_embedding_type": "relative", "hidden_act": "gelu_new",
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None}, "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
        "use_parallel_embedding": False, "embedding_sharding_dim": 0, "max_position_embeddings": 512, "head_size": 24,
        "has_position_embedding": False, "layernorm_type": 1, "has_attention_qkvo_bias": False, "has_mlp_bias": False,
        "has_model_final_layernorm": True, "has_embedding_layernorm": False, "has_embedding_scale": False, "intermediate_size": 96,
        "q_scaling": pytest.approx(1 / math.sqrt(24)), "layernorm_position": 0, "mlp_type": 1, "relative_attention": True,
        "max_distance": 64, "num_buckets": 16, "model_type": "t5", "gated_act": True,
    }  # fmt: skip
    assert {k: enc[k] for k in shared} == shared
    assert {k: dec[k] for k in shared} == shared
    assert enc["architecture"] == "EncoderModel"
    assert enc["num_key_value_heads"] == 4
    assert dec["architecture"] == "DecoderModel"
    decoder_only = {
        "rescale_before_lm_head": False, "encoder_hidden_size": 64, "encoder_num_heads": 4, "encoder_head_size": 24,
        "skip_cross_kv": False, "use_implicit_relative_attention": False, "decoder_start_token_id": 0, "eos_token_id": 1,
        "bos_token_id": None, "pad_token_id": 0,
    }  # fmt: skip
    assert {k: dec[k] for k in decoder_only} == decoder_only


def test_config_values_v1_0(converted: dict[str, Path]) -> None:
    dec = config_of(converted["v1_0"] / "decoder")
    picked = {k: dec[k] for k in ("hidden_act", "mlp_type", "gated_act", "rescale_before_lm_head", "num_buckets", "max_distance")}
    assert picked == {
        "hidden_act": "relu",
        "mlp_type": 0,
        "gated_act": False,
        "rescale_before_lm_head": True,
        "num_buckets": 32,
        "max_distance": 128,
    }
    assert "transformer.layers.0.mlp.gate.weight" not in load_file(converted["v1_0"] / "decoder/rank0.safetensors")


def test_weight_names(converted: dict[str, Path]) -> None:
    enc = set(load_file(converted["flan"] / "encoder/rank0.safetensors"))
    dec = set(load_file(converted["flan"] / "decoder/rank0.safetensors"))
    per_enc = {"attention.qkv.weight", "attention.dense.weight", "attention.rel_attn_table", "attention_layernorm.weight", "mlp.fc.weight",
               "mlp.gate.weight", "mlp.proj.weight", "mlp_layernorm.weight"}  # fmt: skip
    per_dec = {"self_attention.qkv.weight", "self_attention.dense.weight", "self_attention.rel_attn_table",
               "self_attention_layernorm.weight", "cross_attention.qkv.weight", "cross_attention.dense.weight",
               "cross_attention_layernorm.weight", "mlp.fc.weight", "mlp.gate.weight", "mlp.proj.weight", "mlp_layernorm.weight"}  # fmt: skip
    top = {"transformer.vocab_embedding.weight", "transformer.ln_f.weight"}
    assert enc == top | {f"transformer.layers.{i}.{n}" for i in range(2) for n in per_enc}
    assert dec == top | {"lm_head.weight", "rel_attn_table"} | {f"transformer.layers.{i}.{n}" for i in range(2) for n in per_dec}


# --- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_the_fp32_result_cast(
    dtype: str, checkpoints: dict[str, Path], converted: dict[str, Path], tmp_path: Path
) -> None:
    out = convert(checkpoints["flan"], tmp_path / dtype, dtype=dtype)
    target = sharding.DTYPES[dtype]
    for component in ("encoder", "decoder"):
        half, full = load_file(out / component / "rank0.safetensors"), load_file(converted["flan"] / component / "rank0.safetensors")
        assert set(half) == set(full)
        for name, tensor in half.items():
            assert tensor.dtype == target, name
            assert torch.equal(tensor, full[name].to(target)), name
        assert config_of(out / component)["dtype"] == dtype


# --- errors a user can cause ----------------------------------------------------------------------


def test_pipeline_parallelism_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"pp_size 2: pipeline parallelism is not supported for encoder-decoder") as err:
        convert(checkpoints["flan"], tmp_path / "out", pp=2)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_other_architectures_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"architectures \['BertModel'\], model_type 'bert'.*T5ForConditionalGeneration"):
        convert(tiny_bert, tmp_path / "out")


def test_heads_not_divisible_by_tp(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"num_heads 4 is not divisible by tp_size 3"):
        convert(checkpoints["flan"], tmp_path / "out", tp=3)
    assert not (tmp_path / "out").exists()


def test_unknown_dtype(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"dtype 'int8': expected one of float32, float16, bfloat16"):
        convert(checkpoints["flan"], tmp_path / "out", dtype="int8")


def test_pytorch_bin_only_needs_safetensors(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "bin-only"
    folder.mkdir()
    (folder / "config.json").write_text((checkpoints["flan"] / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(UserError, match=r"found pytorch_model.bin\); safetensors weights are required"):
        convert(folder, tmp_path / "out")


def test_missing_tensor_is_named(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_text((checkpoints["flan"] / "config.json").read_text())
    tensors = load_file(checkpoints["flan"] / "model.safetensors")
    del tensors["decoder.block.1.layer.2.DenseReluDense.wi_1.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(UserError, match=r"model\.safetensors: no tensor decoder\.block\.1\.layer\.2\.DenseReluDense\.wi_1\.weight"):
        convert(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the stage action -----------------------------------------------------------------------------


def stage_context(source: Path, out: Path, params: dict[str, Any]) -> StageContext:
    stage = Stage("convert", "t5-test", params, out, convert_stage.action, "test", log_dir=out.parent / "logs")
    out.mkdir()
    return StageContext(stage, out, {"hf": source})


def test_stage_action_converts_and_records(checkpoints: dict[str, Path], converted: dict[str, Path], tmp_path: Path) -> None:
    ctx = stage_context(
        checkpoints["flan"], tmp_path / "work", {"convert": {"dtype": "float32", "tp_size": 1, "pp_size": 1}, "family": "t5"}
    )
    convert_stage.action(ctx)
    for component in ("encoder", "decoder"):
        assert (ctx.out / component / "rank0.safetensors").read_bytes() == (
            converted["flan"] / component / "rank0.safetensors"
        ).read_bytes()
    record = ctx.record["convert"]
    assert record["source_bytes"] == (checkpoints["flan"] / "model.safetensors").stat().st_size
    assert record["files"] == 2
    assert record["peak_rss_mb"] > 0
    assert {"seconds", "source_mb_per_s", "target_mb_per_s", "target_bytes"} <= set(record)


def test_stage_action_unknown_family(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ctx = stage_context(
        checkpoints["flan"], tmp_path / "work", {"convert": {"dtype": "float32", "tp_size": 1, "pp_size": 1}, "family": "bert"}
    )
    with pytest.raises(UserError, match=r"family 'bert' has no checkpoint converter \(available: gemma, gpt2, llama, t5\)"):
        convert_stage.action(ctx)


# --- streaming safetensors I/O ---------------------------------------------------------------------


def sample_tensors() -> Tensors:
    torch.manual_seed(0)
    return {
        "a.f32": torch.randn(5, 7),
        "b.f16": torch.randn(3, 2, 4).half(),
        "c.bf16": torch.randn(9).bfloat16(),
        "d.i64": torch.arange(6).view(2, 3),
        "e.bool": torch.tensor([True, False, True]),
        "f.scalar": torch.tensor(3.5),
        "g.empty": torch.zeros(0, 4),
    }


def plan_of(tensors: Tensors) -> list[Planned]:
    return [Planned(name, tuple(t.shape), t.dtype, lambda t=t: t.clone()) for name, t in tensors.items()]  # type: ignore[misc]


def test_streaming_writer_round_trip(tmp_path: Path) -> None:
    tensors = sample_tensors()
    path = tmp_path / "model.safetensors"
    size = write_safetensors(path, plan_of(tensors), metadata={"format": "pt"})
    assert size == path.stat().st_size
    assert int.from_bytes(path.read_bytes()[:8], "little") % 8 == 0  # data buffer 8-byte aligned
    loaded = load_file(path)
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor), name
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    with open_checkpoint(tmp_path, WHERE) as ckpt:  # and our own reader agrees
        assert {n: ckpt.info(n).shape for n in tensors} == {n: tuple(t.shape) for n, t in tensors.items()}
        for name, tensor in tensors.items():
            assert torch.equal(ckpt.load(name), tensor), name
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_sharded_checkpoint_is_read_through_its_index(tmp_path: Path) -> None:
    tensors = sample_tensors()
    names = list(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, tmp_path / file)
    index = {"metadata": {}, "weight_map": {n: file for file, part in shards.items() for n in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with open_checkpoint(tmp_path, WHERE) as ckpt:
        assert set(ckpt.tensors) == set(tensors)
        assert len(ckpt.files) == 2
        for name, tensor in tensors.items():
            assert torch.equal(ckpt.load(name), tensor), name


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    plan = [*plan_of(sample_tensors()), Planned("wrong", (2, 2), torch.float32, lambda: torch.zeros(3))]
    with pytest.raises(ValueError, match=r"wrong: produced"):
        write_safetensors(tmp_path / "x.safetensors", plan)
    assert list(tmp_path.iterdir()) == []
