"""What a benchmark sends: prompts from a file or synthetic ones, and the tensors of each request.

Synthetic prompts are drawn with a fixed seed from the served model's own vocabulary, so a
rerun sends the same texts and their token counts are what the model really sees.  Token
counts use the tokenizer without special tokens, as genai-perf counts them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core import fsops, interrupts
from tasks.core.errors import UserError

# Vocabulary pieces carry a word-start or continuation marker depending on the tokenizer family.
_MARKERS = ("\u2581", "\u0120", "##")
_MIN_WORD = 2


@dataclass(frozen=True)
class Prompt:
    text: str
    tokens: int


def load_tokenizer(folder: Path) -> Any:  # noqa: ANN401 - a transformers tokenizer
    """The served model's tokenizer, from the files the repository ships (never the Hub)."""
    interrupts.import_held("torch", "transformers")  # AutoTokenizer loads torch; seconds, only bench needs it
    from transformers import AutoTokenizer  # noqa: PLC0415

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError("bench", f"cannot load the tokenizer in {folder}: {exc}") from None


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:  # noqa: ANN401
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]


def read_prompts(path: Path, shown: str) -> list[str]:
    """One prompt per non-empty line of a UTF-8 text file."""
    try:
        prompts = fsops.read_lines(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(shown, f"bench.prompts: cannot read {path}: {exc}") from None
    if not prompts:
        raise UserError(shown, f"bench.prompts: {path} holds no prompt (one per line expected)")
    return prompts


def _words(tokenizer: Any) -> list[str]:  # noqa: ANN401
    words = set()
    for piece in tokenizer.get_vocab():
        word = piece
        for marker in _MARKERS:
            word = word.removeprefix(marker)
        if len(word) >= _MIN_WORD and word.isascii() and word.isalpha():
            words.add(word.lower())
    if not words:
        raise UserError("bench", "the tokenizer's vocabulary has no plain words to build synthetic prompts from; set bench.prompts")
    return sorted(words)


def _one_prompt(tokenizer: Any, words: Sequence[str], rng: random.Random, tokens: int) -> str:  # noqa: ANN401
    text = ""
    while True:
        longer = f"{text} {rng.choice(words)}".strip()
        ids = tokenizer(longer, add_special_tokens=False)["input_ids"]
        if len(ids) >= tokens:
            # Cut at the token boundary: a word that splits into several pieces must not overshoot.
            return str(tokenizer.decode(ids[:tokens], skip_special_tokens=True)).strip() or longer
        text = longer


def synthetic_prompts(tokenizer: Any, count: int, tokens: int, seed: int) -> list[str]:  # noqa: ANN401
    rng = random.Random(seed)  # noqa: S311 - reproducible text, not secrets
    words = _words(tokenizer)
    return [_one_prompt(tokenizer, words, rng, tokens) for _ in range(count)]


def prompts(tokenizer: Any, bench: Mapping[str, Any], prompts_file: Path | None, shown: str) -> list[Prompt]:  # noqa: ANN401
    """The prompts of a run with their token counts."""
    if prompts_file is not None:
        texts = read_prompts(prompts_file, shown)
    else:
        texts = synthetic_prompts(tokenizer, bench["num_prompts"], bench["input_tokens"], bench["seed"])
    return [Prompt(t, n) for t, n in zip(texts, count_tokens(tokenizer, texts), strict=True)]


def _text_tensor(texts: Sequence[str]) -> np.ndarray[Any, Any]:
    return np.array([[t.encode()] for t in texts], dtype=np.object_)


def encoder_inputs(prompt: Prompt, batch_size: int) -> dict[str, np.ndarray[Any, Any]]:
    """The encoder ensemble's ``text`` input: *batch_size* copies of the prompt, shape [batch, 1]."""
    return {"text": _text_tensor([prompt.text] * batch_size)}


def llm_inputs(prompt: Prompt, bench: Mapping[str, Any], *, streaming: bool) -> dict[str, np.ndarray[Any, Any]]:
    """The LLM ensemble's inputs: ``text_input``, ``max_tokens`` and the optional ones the run needs."""
    inputs = {
        "text_input": _text_tensor([prompt.text]),
        "max_tokens": np.array([[bench["output_tokens"]]], dtype=np.int32),
    }
    if streaming:
        inputs["stream"] = np.array([[True]], dtype=np.bool_)
    if bench["ignore_eos"]:
        # What genai-perf's ignore_eos asks of TRT-LLM: no end before output_tokens.
        inputs["min_tokens"] = np.array([[bench["output_tokens"]]], dtype=np.int32)
    return inputs
