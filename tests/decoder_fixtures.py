"""Tiny random decoder-only checkpoints (GPT-2, Llama) with byte-level BPE tokenizers trained offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import SENTENCES


def _tokenizer(specials: list[str], bos: str | None) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES * 4, trainers.BpeTrainer(vocab_size=320, special_tokens=specials))
    if bos is not None:  # Llama prepends its BOS to every prompt; GPT-2 adds nothing
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def build_tiny_decoder(family: str, folder: Path) -> Path:
    """A 2-layer random model of ``family`` (gpt2 or llama) and its tokenizer, saved as an HF folder."""
    import torch
    import transformers as tf

    model: Any
    if family == "gpt2":
        end = "<|endoftext|>"
        tok = _tokenizer([end], None)
        fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=end, eos_token=end, unk_token=end)  # type: ignore[no-untyped-call]
        torch.manual_seed(0)
        config: Any = tf.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=tok.get_vocab_size(),
            bos_token_id=tok.token_to_id(end), eos_token_id=tok.token_to_id(end),
        )  # fmt: skip
        model = tf.GPT2LMHeadModel(config)
    else:
        tok = _tokenizer(["<unk>", "<s>", "</s>"], "<s>")
        fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")  # type: ignore[no-untyped-call]
        torch.manual_seed(0)
        config = tf.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=tok.get_vocab_size(), max_position_embeddings=128, bos_token_id=tok.token_to_id("<s>"),
            eos_token_id=tok.token_to_id("</s>"), tie_word_embeddings=False,
        )  # fmt: skip
        model = tf.LlamaForCausalLM(config)
    model.eval().save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def hf_greedy(folder: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """transformers' greedy continuation of each prompt, decoded without the prompt and special tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()  # type: ignore[no-untyped-call]
    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=tokenizer.eos_token_id)
        texts.append(str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)))
    return texts
