"""transformers' greedy text of the tiny decoder-only checkpoints (built by ``tasks.commands.conformance.fixtures``)."""

from __future__ import annotations

from pathlib import Path

from tasks.commands.conformance.fixtures import build_tiny_decoder


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


__all__ = ["build_tiny_decoder", "hf_greedy"]
