"""Which Triton models an encoder repository holds, and which files each one gets.

The config stage fills the templates named here; the repo stage links the
artifacts named here.  Both targets give the same model names and tensors; only
the encoder's implementation differs (TensorRT plan vs onnxruntime python model).
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.manifest import is_meta
from tasks.families import encoders
from tasks.triton import llm_layout
from tasks.triton.repository import Artifact, TritonModel

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PREPROCESSOR_FILE = "preprocessor_config.json"


def front_model(model: str, family: str) -> TritonModel:
    """What turns the request into encoder tensors: the tokenizer, or image preprocessing."""
    if encoders.family(family).modality == "image":
        return TritonModel(f"{model}_preprocess", "image/preprocess", (Artifact("hf", PREPROCESSOR_FILE, f"1/{PREPROCESSOR_FILE}"),))
    tokenizer_files = tuple(Artifact("hf", name, f"1/{name}", required=name == "tokenizer.json") for name in TOKENIZER_FILES)
    return TritonModel(f"{model}_tokenizer", "encoder/tokenizer", tokenizer_files)


def encoder_models(model: str, target: str, family: str) -> list[TritonModel]:
    """Ensemble ``<model>`` = ``<model>_tokenizer`` (or ``_preprocess``) -> ``<model>_encoder``."""
    if target == "trt":
        encoder = TritonModel(f"{model}_encoder", "encoder/tensorrt_plan", (Artifact("engine", "model.plan", "1/model.plan"),))
    else:
        encoder = TritonModel(f"{model}_encoder", "encoder/onnx_cpu", (Artifact("engine", "model.onnx", "1/model.onnx"),))
    return [TritonModel(model, "encoder/ensemble", empty_dirs=("1",)), front_model(model, family), encoder]


# What the index stage writes and the search model reads: vectors, the items they embed, facts.
INDEX_FILES = ("embeddings.npy", "items.json", "index.json")


def ensemble_models(name: str, searchable: bool = False) -> list[TritonModel]:  # noqa: FBT001, FBT002
    """The models an ensemble adds on top of its members' (which keep their own names)."""
    models = [TritonModel(name, "ensemble/embeddings")]
    if searchable:
        index = tuple(Artifact("index", f, f"1/{f}") for f in INDEX_FILES)
        models.append(TritonModel(search_model(name), "ensemble/search", index))
    return models


def search_model(name: str) -> str:
    return f"{name}_search"


def triton_models(
    kind: str,
    name: str,
    target: str,
    hf_dir: Path | None,
    *,
    family: str = "",
    searchable: bool = False,
) -> list[TritonModel]:
    """The Triton models of a repository; ``hf_dir`` (None when only templates matter) lists the checkpoint files."""
    if kind == "encoder":
        return encoder_models(name, target, family)
    if kind == "ensemble":
        return ensemble_models(name, searchable)
    # The fetch stage's own manifests and action record describe the build, not the checkpoint.
    files = [p.name for p in hf_dir.iterdir() if p.is_file() and not is_meta(p.name)] if hf_dir is not None else []
    tokenizer, model = llm_layout.split_checkpoint_files(files)
    return llm_layout.llm_models(target, tokenizer_files=tokenizer, hf_files=model, engine_dirs=llm_layout.engine_dirs(family))
