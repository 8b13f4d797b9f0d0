"""GPT-2, Llama and Gemma -> TRT-LLM decoder-only checkpoints, checked numerically against transformers.

A reference forward pass written from TRT-LLM's layer definitions (pre-norm blocks, fused QKV
[q; k; v], rope_gpt_neox, GatedMLP = proj(act(fc x) * gate x), RmsNorm = x / rms * w) runs on
the converted tensors of tiny random models and must equal the HF model: the hidden state after
the first block and the logits.  Tensor- and pipeline-parallel rank files must reassemble into
the single-rank checkpoint exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional

from tasks.core.errors import UserError
from tasks.families.converters import Settings, converter
from tasks.families.converters.decoder import stage_layers

WHERE = "convert:test"
FAMILIES = ("gpt2", "llama", "gemma")


def _perturb_norms(model: torch.nn.Module) -> None:
    # Random init leaves RMSNorm scales at 1 (Llama) or 0 (Gemma): random values make the checks bite.
    generator = torch.Generator().manual_seed(1)
    base = 0.0 if "Gemma" in type(model).__name__ else 1.0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3 + base)


def build(family: str, folder: Path) -> Path:
    """A tiny random model of the family, saved as an HF folder (3 layers: pp=2 splits them 2 + 1)."""
    import transformers as tf

    torch.manual_seed(0)
    model: Any
    config: Any
    if family == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=101, n_positions=64))
    elif family == "llama":
        config = tf.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=101, max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
            tie_word_embeddings=False,
        )  # fmt: skip
        model = tf.LlamaForCausalLM(config)
    else:
        # An even vocab, so tp 2 can split Gemma's embedding by vocabulary rows (and tp 4 cannot).
        config = tf.GemmaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
            head_dim=16, vocab_size=102, max_position_embeddings=64,
        )  # fmt: skip
        model = tf.GemmaForCausalLM(config)
    _perturb_norms(model)
    model.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    return {family: build(family, root / family) for family in FAMILIES}


def convert(family: str, source: Path, out: Path, tp: int = 1, pp: int = 1) -> Path:
    converter(family, WHERE)(source, out, Settings("float32", tp, pp), WHERE)
    return out


# --- the reference forward pass on converted tensors ---------------------------------------------


def _norm(x: torch.Tensor, w: dict[str, torch.Tensor], name: str, cfg: dict[str, Any]) -> torch.Tensor:
    if cfg["architecture"] == "GPTForCausalLM":
        return functional.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], cfg["norm_epsilon"])
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg["norm_epsilon"]) * w[f"{name}.weight"]


def _rope(x: torch.Tensor, cfg: dict[str, Any]) -> torch.Tensor:
    size = x.shape[-1]
    inv_freq = 1.0 / cfg["rotary_base"] ** (torch.arange(0, size, 2, dtype=torch.float32) / size)
    angles = torch.arange(x.shape[-2], dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def _act(x: torch.Tensor, name: str) -> torch.Tensor:
    return functional.gelu(x, approximate="tanh") if name == "gelu" else functional.silu(x)


def _linear(x: torch.Tensor, w: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return functional.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def _attention(x: torch.Tensor, w: dict[str, torch.Tensor], p: str, cfg: dict[str, Any]) -> torch.Tensor:
    heads, kv, size = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_size"]
    qkv = _linear(x, w, f"{p}.attention.qkv")
    q, k, v = torch.split(qkv, [heads * size, kv * size, kv * size], -1)
    q, k, v = (t.view(t.shape[0], -1, size).transpose(0, 1) for t in (q, k, v))
    if cfg["position_embedding_type"] == "rope_gpt_neox":
        q, k = _rope(q, cfg), _rope(k, cfg)
    k, v = k.repeat_interleave(heads // kv, 0), v.repeat_interleave(heads // kv, 0)
    out = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return _linear(out.transpose(0, 1).reshape(x.shape[0], -1), w, f"{p}.attention.dense")


def _mlp(x: torch.Tensor, w: dict[str, torch.Tensor], p: str, cfg: dict[str, Any]) -> torch.Tensor:
    if f"{p}.mlp.gate.weight" in w:
        return _linear(_act(_linear(x, w, f"{p}.mlp.fc"), cfg["hidden_act"]) * _linear(x, w, f"{p}.mlp.gate"), w, f"{p}.mlp.proj")
    return _linear(_act(_linear(x, w, f"{p}.mlp.fc"), cfg["hidden_act"]), w, f"{p}.mlp.proj")


def trt_forward(w: dict[str, torch.Tensor], cfg: dict[str, Any], ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden state after block 0, logits) for one sequence, from a single-rank converted checkpoint."""
    x = w["transformer.vocab_embedding.weight"][ids]
    if cfg["architecture"] == "GemmaForCausalLM":
        x = x * torch.tensor(math.sqrt(cfg["hidden_size"]))  # TRT-LLM's Gemma scales the embedding at run time
    if "transformer.position_embedding.weight" in w:
        x = x + w["transformer.position_embedding.weight"][: len(ids)]
    first = None
    for layer in range(cfg["num_hidden_layers"]):
        p = f"transformer.layers.{layer}"
        x = x + _attention(_norm(x, w, f"{p}.input_layernorm", cfg), w, p, cfg)
        x = x + _mlp(_norm(x, w, f"{p}.post_layernorm", cfg), w, p, cfg)
        first = x if first is None else first
    logits = _norm(x, w, "transformer.ln_f", cfg) @ w["lm_head.weight"][: cfg["vocab_size"]].T
    assert first is not None
    return first, logits


def hf_forward(source: Path, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        out = model(input_ids=ids[None], output_hidden_states=True)
    return out.hidden_states[1][0], out.logits[0]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_tensors_compute_what_hf_computes(family: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = convert(family, checkpoints[family], tmp_path / family)
    cfg = json.loads((out / "config.json").read_text())
    weights = load_file(out / "rank0.safetensors")
    ids = torch.tensor([5, 17, 42, 99, 3, 64, 8, 23, 77, 1])
    with torch.no_grad():
        block, logits = trt_forward(weights, cfg, ids)
    hf_block, hf_logits = hf_forward(checkpoints[family], ids)
    assert rel_err(block, hf_block) < 1e-5
    assert rel_err(logits, hf_logits) < 1e-5


def test_config_json_carries_each_familys_keys(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    configs = {f: json.loads((convert(f, checkpoints[f], tmp_path / f, tp=2) / "config.json").read_text()) for f in FAMILIES}
    gpt2, llama, gemma = configs["gpt2"], configs["llama"], configs["gemma"]
    assert (gpt2["architecture"], gpt2["position_embedding_type"], gpt2["hidden_act"]) == ("GPTForCausalLM", "learned_absolute", "gelu")
    assert gpt2["bias"] is True
    assert (llama["architecture"], llama["position_embedding_type"], llama["hidden_act"]) == ("LlamaForCausalLM", "rope_gpt_neox", "silu")
    assert (llama["num_key_value_heads"], llama["rotary_base"]) == (2, 500000.0)
    assert (gemma["architecture"], gemma["hidden_act"], gemma["head_size"], gemma["num_key_value_heads"]) == (
        "GemmaForCausalLM",
        "gelu",
        16,
        1,
    )
    assert gemma["share_embedding_table"] is True
    # TRT-LLM's GemmaConfig forces a vocabulary-split embedding when tp_size > 1; GPT-2 and Llama keep theirs whole.
    assert (gemma["use_parallel_embedding"], gemma["embedding_sharding_dim"]) == (True, 0)
    assert gpt2["use_parallel_embedding"] is llama["use_parallel_embedding"] is False
    for config in configs.values():
        assert config["mapping"] == {"world_size": 2, "tp_size": 2, "pp_size": 1}
        assert config["quantization"] == {"quant_algo": None, "kv_cache_quant_algo": None}


# --- tensor and pipeline parallel ranks reassemble exactly ---------------------------------------


def _qkv_parts(tensor: torch.Tensor, cfg: dict[str, Any], tp: int) -> list[torch.Tensor]:
    """One rank's fused QKV split back into its q, k and v rows."""
    size, heads, kv = cfg["head_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    kv_rows = (kv // tp if kv % tp == 0 else 1) * size
    return list(torch.split(tensor, [heads // tp * size, kv_rows, kv_rows]))


def _join_qkv(shards: list[torch.Tensor], cfg: dict[str, Any], tp: int) -> torch.Tensor:
    parts = [_qkv_parts(s, cfg, tp) for s in shards]
    kv = cfg["num_key_value_heads"]
    # With fewer kv heads than ranks, consecutive ranks hold the same head: keep one copy.
    keep = range(0, tp, tp // kv) if kv < tp else range(tp)
    q = torch.cat([p[0] for p in parts])
    k, v = (torch.cat([parts[r][i] for r in keep]) for i in (1, 2))
    for r in range(tp):
        torch.testing.assert_close(parts[r][1], parts[r - r % (tp // kv)][1] if kv < tp else parts[r][1], rtol=0, atol=0)
    return torch.cat([q, k, v])


def _join(name: str, shards: list[torch.Tensor], cfg: dict[str, Any], tp: int) -> torch.Tensor:
    if name == "transformer.vocab_embedding.weight" and cfg["use_parallel_embedding"]:
        assert cfg["embedding_sharding_dim"] == 0
        assert all(s.shape[0] == cfg["vocab_size"] // tp for s in shards)
        return torch.cat(shards)
    if ".attention.qkv." in name:
        return _join_qkv(shards, cfg, tp)
    if name.endswith(("attention.dense.weight", "mlp.proj.weight")):
        return torch.cat(shards, 1)
    if name.endswith(("mlp.fc.weight", "mlp.fc.bias", "mlp.gate.weight")) or name == "lm_head.weight":
        return torch.cat(shards)[: cfg["vocab_size"]] if name == "lm_head.weight" else torch.cat(shards)
    for shard in shards[1:]:
        assert torch.equal(shard, shards[0]), f"{name} differs between tensor-parallel ranks"
    return shards[0]


def reassemble(folder: Path, tp: int, pp: int) -> dict[str, torch.Tensor]:
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["mapping"] == {"world_size": tp * pp, "tp_size": tp, "pp_size": pp}
    assert sorted(p.name for p in folder.glob("rank*.safetensors")) == sorted(f"rank{r}.safetensors" for r in range(tp * pp))
    merged: dict[str, torch.Tensor] = {}
    for pp_rank in range(pp):
        layers = stage_layers(cfg["num_hidden_layers"], pp_rank, pp)
        ranks = [load_file(folder / f"rank{pp_rank * tp + t}.safetensors") for t in range(tp)]
        for name in ranks[0]:
            parts = name.split(".")
            if name.startswith("transformer.layers."):
                parts[2] = str(layers[int(parts[2])])  # local layer index -> global
            merged[".".join(parts)] = _join(name, [r[name] for r in ranks], cfg, tp)
    return merged


@pytest.mark.parametrize(
    ("family", "tp", "pp"), [("gpt2", 2, 1), ("gpt2", 1, 2), ("llama", 2, 2), ("llama", 4, 1), ("gemma", 2, 1), ("gemma", 2, 2)]
)
def test_parallel_ranks_reassemble_to_the_single_rank_checkpoint(
    family: str, tp: int, pp: int, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    single = load_file(convert(family, checkpoints[family], tmp_path / "one") / "rank0.safetensors")
    many = convert(family, checkpoints[family], tmp_path / "many", tp=tp, pp=pp)
    # Only Gemma splits its table (TRT-LLM's GemmaConfig turns parallel embedding on whenever tp_size > 1).
    assert json.loads((many / "config.json").read_text())["use_parallel_embedding"] is (family == "gemma" and tp > 1)
    split = reassemble(many, tp, pp)
    assert sorted(split) == sorted(single)
    for name, tensor in single.items():
        assert torch.equal(split[name], tensor), name


def test_pipeline_stages_hold_their_own_layers_embeddings_and_head(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = convert("llama", checkpoints["llama"], tmp_path / "pp", tp=1, pp=2)
    first, last = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert "transformer.vocab_embedding.weight" in first
    assert "lm_head.weight" not in first
    assert "transformer.ln_f.weight" not in first
    assert {n.split(".")[2] for n in first if n.startswith("transformer.layers.")} == {"0", "1"}
    assert {n.split(".")[2] for n in last if n.startswith("transformer.layers.")} == {"0"}
    assert "lm_head.weight" in last
    assert "transformer.vocab_embedding.weight" not in last
    assert stage_layers(3, 0, 2) == [0, 1]
    assert stage_layers(3, 1, 2) == [2]


def test_gemma_splits_its_shared_table_by_vocabulary_rows(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = convert("gemma", checkpoints["gemma"], tmp_path / "tp2", tp=2)
    ranks = [load_file(out / f"rank{r}.safetensors") for r in range(2)]
    table = load_file(checkpoints["gemma"] / "model.safetensors")["model.embed_tokens.weight"]
    for rank, weights in enumerate(ranks):
        embedding = weights["transformer.vocab_embedding.weight"]
        assert embedding.shape == (51, 32)  # ceil(102 / 2) rows: what TRT-LLM's Embedding declares for sharding_dim 0
        assert torch.equal(embedding, table[rank * 51 : (rank + 1) * 51])
        # The head shares the table: same rows on the same rank, as GemmaForCausalLM's padded ColumnLinear declares.
        assert torch.equal(weights["lm_head.weight"], embedding)
    for family in ("gpt2", "llama"):  # a whole table on every rank
        other = load_file(convert(family, checkpoints[family], tmp_path / family, tp=2) / "rank1.safetensors")
        assert other["transformer.vocab_embedding.weight"].shape == (101, 32)


def test_vocab_is_padded_for_tensor_parallel_heads(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = convert("gpt2", checkpoints["gpt2"], tmp_path / "tp2", tp=2)
    head = load_file(out / "rank1.safetensors")["lm_head.weight"]
    assert head.shape == (51, 32)  # 101 rows padded to 102, half each
    assert torch.equal(head[-1], torch.zeros(32))


@pytest.mark.parametrize(
    ("family", "tp", "pp", "message"),
    [
        ("llama", 3, 1, "num_attention_heads 4 is not divisible by tp_size 3"),
        ("gpt2", 1, 4, "pp_size 4 is more than the 3 layers"),
        ("llama", 8, 1, "num_attention_heads 4 is not divisible by tp_size 8"),
        ("gemma", 4, 1, "convert.tp_size 4 does not divide vocab_size 102"),
    ],
)
def test_impossible_parallelism_is_one_clear_error(  # noqa: PLR0917 - parametrized values and two fixtures
    family: str, tp: int, pp: int, message: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(UserError, match=message):
        convert(family, checkpoints[family], tmp_path / "bad", tp=tp, pp=pp)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_a_checkpoint_of_another_family_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"config\.json: model_type is 'gpt2'; family llama expects model_type 'llama'"):
        convert("llama", checkpoints["gpt2"], tmp_path / "wrong")


def test_rope_base_and_scaling_in_either_transformers_spelling() -> None:
    from tasks.families.converters.decoder import rope_settings

    assert rope_settings({"rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 2.0}}) == (
        10000.0,
        {"type": "linear", "factor": 2.0},
    )
    parameters = {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}}
    assert rope_settings(parameters) == (500000.0, {"type": "llama3", "factor": 8.0})
    assert rope_settings({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}) == (1e6, None)
