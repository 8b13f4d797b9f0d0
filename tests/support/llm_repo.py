"""An LLM repository assembled as the config and repo stages do it, and transformers on the same checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tasks.stages import config, repo
from tasks.triton import llm_layout

MAX_TOKENS = 12
TRITON: dict[str, Any] = {
    "max_batch_size": 4,
    "decoupled": False,
    "instance_count": 1,
    # Long enough for two requests sent together to be batched, so batch independence is exercised.
    "max_queue_delay_us": 20_000,
    "kv_cache_free_gpu_mem_fraction": 0.8,
    "cross_kv_cache_fraction": 0.5,
    "batch_scheduler_policy": "guaranteed_no_evict",
    "max_tokens_in_paged_kv_cache": None,
}
ENGINE: dict[str, Any] = {"max_batch_size": 4, "max_input_len": 64, "max_output_len": 16, "max_beam_width": 2}


def assemble(hf: Path, root: Path, target: str, triton: dict[str, Any], engine_dir: Path | None = None) -> Path:
    """``root/repo`` built like the product builds ``repos/<name>``; returns the repository."""
    tokenizer_files, model_files = llm_layout.split_checkpoint_files(p.name for p in hf.iterdir() if p.is_file())
    models = llm_layout.llm_models(target, tokenizer_files=tokenizer_files, hf_files=model_files)
    out = root / "repo"
    hf_config = json.loads((hf / "config.json").read_text())
    values = llm_layout.template_values("t5tiny", triton, ENGINE, target, out.resolve(), hf_config)
    for model in models:
        config.render_model(model, values, root / "config")
        repo.link_model(model, root / "config" / model.name, {"hf": hf, "engine": engine_dir or root / "no-engine"}, out / model.name)
    return out


@dataclass
class Reference:
    """transformers on the same checkpoint: what the repository must answer."""

    folder: Path

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.folder)

    @cached_property
    def model(self) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM.from_pretrained(self.folder).eval()

    def ids(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt).input_ids)

    def generate(self, prompt: str, **kwargs: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.model.generate(**self.tokenizer(prompt, return_tensors="pt"), max_new_tokens=MAX_TOKENS, **kwargs)

    def text(self, prompt: str) -> str:
        return str(self.tokenizer.decode(self.generate(prompt)[0], skip_special_tokens=True))

    def beams(self, prompt: str, width: int) -> list[list[int]]:
        """Generated tokens per beam, best first, without the decoder start token and the end token."""
        out = self.generate(prompt, num_beams=width, num_return_sequences=width).tolist()
        return [seq[1 : seq.index(1, 1)] if 1 in seq[1:] else seq[1:] for seq in out]
