"""Tiny random T5 checkpoints with an offline-trained tokenizer (no Hub access in tests).

``flan`` is T5 v1.1 / Flan-style (gated-gelu, 16 buckets, max distance 64) saved with
``tie_word_embeddings: false``; transformers 5 still writes such a T5 tied (it saves
``scale_decoder_outputs`` instead), so the untied Flan layout is covered by the converter tests'
own ``flan_untied`` variant.  ``v1_0`` is the original T5 (relu, tied embeddings, lm_head input
rescaled by d_model**-0.5).  Shapes deliberately use
d_kv != d_model / num_heads and non-default relative-attention buckets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORPUS = [
    "translate English to German: the house is wonderful",
    "summarize: triton serves models on cpu and gpu with the same repository",
    "question: what does an incremental build redo? answer: only what changed",
    "a man is eating food",
    "a man is eating a piece of bread",
    "the girl is carrying a baby",
    "a man is riding a horse",
    "a woman is playing violin",
    "two men pushed carts through the woods",
    "engines are rebuilt when a flag changes",
    "the tokenizer lives inside the repository",
    "translate English to French: good morning",
    "the quick brown fox jumps over the lazy dog",
]


def train_tokenizer(folder: Path) -> int:
    """A Unigram tokenizer (pad=0, eos=1, unk=2; appends </s>) saved as an HF fast tokenizer; returns its size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(CORPUS * 8, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")  # type: ignore[no-untyped-call]
    fast.save_pretrained(folder)
    return int(tok.get_vocab_size())


def build_tiny_t5(folder: Path, *, variant: str = "flan", seed: int = 0) -> Path:
    """Save a tiny random T5ForConditionalGeneration plus tokenizer into ``folder``."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    vocab = train_tokenizer(folder)
    common: dict[str, Any] = {
        "vocab_size": vocab,
        "d_model": 64,
        "d_kv": 24,
        "d_ff": 96,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        # With the default factor 1.0 a random T5 emits only <pad>; 10 gives varied, non-empty text.
        "initializer_factor": 10.0,
    }
    extra: dict[str, Any]
    if variant == "flan":
        extra = {
            "feed_forward_proj": "gated-gelu",
            "tie_word_embeddings": False,
            "relative_attention_num_buckets": 16,
            "relative_attention_max_distance": 64,
        }
    elif variant == "v1_0":
        extra = {"feed_forward_proj": "relu", "tie_word_embeddings": True}
    else:
        raise ValueError(variant)
    config = T5Config(**common, **extra)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(folder)
    return folder
