"""Tiny random checkpoints with tokenizers trained offline: the models the tests and the conformance kit build.

Every generator seeds torch and trains its tokenizer on the fixed sentences below, so the same
call writes the same weights and vocabulary on any machine without reaching a hub.  The shapes
are deliberately small (2 layers, hidden 32-64) and a little unusual where a converter could get
them wrong: T5 with d_kv != d_model / num_heads and non-default relative-attention buckets, Llama
with grouped-query attention, Gemma with one key/value head and head_dim != hidden / heads.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

# Training text of the tiny BERT and decoder tokenizers; also a small search corpus.
SENTENCES = [
    "a man is eating food",
    "a man is eating a piece of bread",
    "the girl is carrying a baby",
    "a man is riding a horse",
    "a woman is playing violin",
    "two men pushed carts through the woods",
    "a man is riding a white horse on an enclosed ground",
    "a monkey is playing drums",
    "someone in a gorilla costume is playing a set of drums",
    "triton serves models on cpu and gpu",
]

# Training text of the T5 tokenizer.
T5_CORPUS = [
    "translate English to German: the house is wonderful",
    "summarize: triton serves models on cpu and gpu with the same repository",
    "question: what does an incremental build redo? answer: only what changed",
    *SENTENCES[:6],
    "engines are rebuilt when a flag changes",
    "the tokenizer lives inside the repository",
    "translate English to French: good morning",
    "the quick brown fox jumps over the lazy dog",
]

DECODER_FAMILIES = ("gpt2", "llama", "gemma")


# ---- encoders --------------------------------------------------------------------------------


def build_tiny_bert(folder: Path) -> Path:
    """A random 2-layer BERT with a WordPiece tokenizer trained offline; saved as an HF folder."""
    import torch  # noqa: PLC0415 - heavy imports only where a checkpoint is written
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: PLC0415
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast  # noqa: PLC0415

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(SENTENCES * 4, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).eval().save_pretrained(folder)  # type: ignore[no-untyped-call]
    fast.save_pretrained(folder)
    return folder


def build_tiny_clip_vision(folder: Path) -> Path:
    """A random 2-layer CLIP vision tower with projection (32x32 images) and its image processor config."""
    import torch  # noqa: PLC0415
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection  # noqa: PLC0415
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: PLC0415

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8, projection_dim=24
    )
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)  # type: ignore[no-untyped-call]
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    return folder


def generated_images() -> list[bytes]:
    """Three images of different sizes and formats: a gradient PNG, a noisy JPEG, a transparent PNG."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(7)
    gradient = np.stack([*np.meshgrid(np.linspace(0, 255, 61), np.linspace(0, 255, 45)), np.full((45, 61), 90.0)], -1)
    pictures = [
        (Image.fromarray(gradient.astype(np.uint8)), "PNG"),
        (Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)), "JPEG"),
        (Image.fromarray(rng.integers(0, 256, (33, 70, 4), dtype=np.uint8), mode="RGBA"), "PNG"),
    ]
    encoded = []
    for picture, fmt in pictures:
        out = io.BytesIO()
        picture.save(out, format=fmt)
        encoded.append(out.getvalue())
    return encoded


# ---- T5 --------------------------------------------------------------------------------------


def train_tokenizer(folder: Path) -> int:
    """A Unigram tokenizer (pad=0, eos=1, unk=2; appends </s>) saved as an HF fast tokenizer; returns its size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(T5_CORPUS * 8, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")  # type: ignore[no-untyped-call]
    fast.save_pretrained(folder)
    return int(tok.get_vocab_size())


def build_tiny_t5(folder: Path, *, variant: str = "flan", seed: int = 0) -> Path:
    """A tiny random T5ForConditionalGeneration plus tokenizer in ``folder``.

    ``flan`` is T5 v1.1 / Flan-style (gated-gelu, 16 buckets, max distance 64, untied embeddings);
    ``v1_0`` is the original T5 (relu, tied embeddings, lm_head input rescaled by d_model**-0.5).
    """
    import torch  # noqa: PLC0415
    from transformers import T5Config, T5ForConditionalGeneration  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "vocab_size": train_tokenizer(folder), "d_model": 64, "d_kv": 24, "d_ff": 96, "num_layers": 2, "num_decoder_layers": 2,
        "num_heads": 4, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
        # With the default factor 1.0 a random T5 emits only <pad>; 10 gives varied, non-empty text.
        "initializer_factor": 10.0,
    }  # fmt: skip
    variants: dict[str, dict[str, Any]] = {
        "flan": {
            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "relative_attention_num_buckets": 16,
            "relative_attention_max_distance": 64,
        },
        "v1_0": {"feed_forward_proj": "relu", "tie_word_embeddings": True},
    }  # fmt: skip
    if variant not in variants:
        raise ValueError(variant)
    torch.manual_seed(seed)
    T5ForConditionalGeneration(T5Config(**common, **variants[variant])).eval().save_pretrained(folder)  # type: ignore[no-untyped-call]
    return folder


# ---- decoder-only ------------------------------------------------------------------------------


def _bpe(specials: list[str], bos: str | None) -> Any:  # noqa: ANN401 - tokenizers.Tokenizer is untyped
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: PLC0415

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES * 4, trainers.BpeTrainer(vocab_size=320, special_tokens=specials))
    if bos is not None:  # Llama and Gemma prepend their BOS to every prompt; GPT-2 adds nothing
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def _decoder(family: str) -> tuple[Any, Any]:
    """(model, fast tokenizer) of a 2-layer random ``family`` model."""
    import torch  # noqa: PLC0415
    import transformers as tf  # noqa: PLC0415

    if family == "gpt2":
        end = "<|endoftext|>"
        tok = _bpe([end], None)
        fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=end, eos_token=end, unk_token=end)  # type: ignore[no-untyped-call]
        torch.manual_seed(0)
        return tf.GPT2LMHeadModel(tf.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=tok.get_vocab_size(),
            bos_token_id=tok.token_to_id(end), eos_token_id=tok.token_to_id(end),
        )), fast  # fmt: skip
    if family == "llama":
        tok = _bpe(["<unk>", "<s>", "</s>"], "<s>")
        fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")  # type: ignore[no-untyped-call]
        torch.manual_seed(0)
        return tf.LlamaForCausalLM(tf.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=tok.get_vocab_size(), max_position_embeddings=128, bos_token_id=tok.token_to_id("<s>"),
            eos_token_id=tok.token_to_id("</s>"), tie_word_embeddings=False,
        )), fast  # fmt: skip
    if family == "gemma":
        tok = _bpe(["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>")
        fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")  # type: ignore[no-untyped-call]
        torch.manual_seed(0)
        return tf.GemmaForCausalLM(tf.GemmaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            vocab_size=tok.get_vocab_size(), max_position_embeddings=128, bos_token_id=tok.token_to_id("<bos>"),
            eos_token_id=tok.token_to_id("<eos>"), pad_token_id=tok.token_to_id("<pad>"),
        )), fast  # fmt: skip
    raise ValueError(family)


def build_tiny_decoder(family: str, folder: Path) -> Path:
    """A 2-layer random model of ``family`` (gpt2, llama or gemma) and its tokenizer, saved as an HF folder."""
    model, fast = _decoder(family)
    model.eval().save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
