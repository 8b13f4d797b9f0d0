"""Which Triton models an LLM repository holds, which files each one gets, and what fills their templates.

The names and tensors are those of TensorRT-LLM's ``inflight_batcher_llm`` repository, so clients written
for it (ensemble ``text_input``/``max_tokens`` -> ``text_output``, or ``tensorrt_llm`` token ids) work
unchanged on either target.  Only ``tensorrt_llm`` differs: on ``trt`` it is the ``tensorrtllm`` C++ backend
over the built engines, on ``cpu`` a python model that runs the HF checkpoint with transformers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.triton import repository

MODEL_NAMES = ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls")
# Where the python models find their files, relative to the Triton model directory.
TOKENIZER_DIR = "1/tokenizer"
HF_DIR = "1/hf"
# The engine stage's output holds one engine directory per half of an encoder-decoder model,
# or one for a decoder-only model.
ENGINE_DIRS = ("encoder", "decoder")
DECODER_ONLY_DIRS = ("engine",)


def engine_dirs(family: str) -> tuple[str, ...]:
    """The engine folders of a family: both halves of T5 (encoder-decoder), else one."""
    return ENGINE_DIRS if family == "t5" else DECODER_ONLY_DIRS


# HF files that make up a tokenizer; everything else of a checkpoint is of no use to pre/postprocessing.
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
    }
)


def split_checkpoint_files(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split a fetched HF folder's file names into (tokenizer files, files the CPU model loads)."""
    names = sorted(set(names))
    tokenizer = [n for n in names if Path(n).name in TOKENIZER_FILES]
    model = [n for n in names if n not in tokenizer]
    return tokenizer, model


def _hf_links(files: Sequence[str], dest: str) -> tuple[repository.Artifact, ...]:
    # The caller lists files that exist in the fetched folder, so each one is required.
    return tuple(repository.Artifact("hf", name, f"{dest}/{name}") for name in files)


def llm_models(
    target: str, *, tokenizer_files: Sequence[str], hf_files: Sequence[str], engine_dirs: Sequence[str] = ENGINE_DIRS
) -> list[repository.TritonModel]:
    """The five models of the repository, in the order ensemble, preprocessing, tensorrt_llm, postprocessing, BLS.

    ``tokenizer_files`` are linked into ``preprocessing/1/tokenizer/`` and ``postprocessing/1/tokenizer/``;
    ``hf_files`` (cpu only) into ``tensorrt_llm/1/hf/``.  On trt, the engine stage's ``engine_dirs``
    (``encoder/`` and ``decoder/``, or ``engine/``) become ``tensorrt_llm/1/<dir>/``.
    """
    if target == "trt":
        engines = tuple(repository.Artifact("engine", d, f"1/{d}") for d in engine_dirs)
        tensorrt_llm = repository.TritonModel("tensorrt_llm", "llm/tensorrt_llm_trt", engines)
    elif target == "cpu":
        tensorrt_llm = repository.TritonModel("tensorrt_llm", "llm/tensorrt_llm_cpu", _hf_links(hf_files, HF_DIR))
    else:
        raise ValueError(target)
    tokenizer = _hf_links(tokenizer_files, TOKENIZER_DIR)
    return [
        repository.TritonModel("ensemble", "llm/ensemble", empty_dirs=("1",)),
        repository.TritonModel("preprocessing", "llm/preprocessing", tokenizer),
        tensorrt_llm,
        repository.TritonModel("postprocessing", "llm/postprocessing", tokenizer),
        repository.TritonModel("tensorrt_llm_bls", "llm/tensorrt_llm_bls"),
    ]


def _bool(value: object) -> str:
    # pbtxt booleans and the backends' string parameters both read lower-case true/false.
    return "true" if value else "false"


def _optional_parameter(key: str, value: object) -> str:
    """A whole ``parameters`` entry, or a comment when unset: the backend then keeps its own default."""
    if value is None:
        return f"# {key}: unset, the backend default applies"
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'


def _tokenizer_dirs(repo_dir: Path | None) -> dict[str, object]:
    """``tokenizer_dir`` of tensorrt_llm (preprocessing's tokenizer) and of pre/postprocessing (their own).

    Only trt fills them (with absolute paths, which promote rewrites like the engine paths): the project's
    python models find ``1/tokenizer`` themselves, and cpu configs stay free of where the checkout lies.
    """
    values: dict[str, object] = {"tokenizer_dir": "" if repo_dir is None else str(repo_dir / "preprocessing" / TOKENIZER_DIR)}
    for model in ("preprocessing", "postprocessing"):
        folder = None if repo_dir is None else repo_dir / model / TOKENIZER_DIR
        values[f"{model}_tokenizer_dir_parameter"] = _optional_parameter("tokenizer_dir", folder)
    return values


def template_values(  # noqa: PLR0917 - the config stage's call, one argument per input it has
    name: str,
    triton: Mapping[str, Any],
    engine: Mapping[str, Any],
    target: str,
    repo_dir: Path,
    hf_config: Mapping[str, Any],
) -> dict[str, object]:
    """Every placeholder of the five templates (for both targets) filled from the YAML blocks.

    ``name`` is the YAML model name; ``repo_dir`` the absolute root engine paths start from (the
    tensorrtllm backend wants absolute paths): the config stage passes ``repository.REPOSITORY_MARKER``,
    which the repo stage rewrites.  ``hf_config`` is the checkpoint's config.json.
    """
    if target == "trt" and not repo_dir.is_absolute():
        raise ValueError(f"repo_dir must be absolute, got {repo_dir}")
    encoder_decoder = bool(hf_config.get("is_encoder_decoder", False))
    engine_root = repo_dir / "tensorrt_llm" / "1"
    main_engine = engine_root / ("decoder" if encoder_decoder else DECODER_ONLY_DIRS[0])
    # Triton refuses an ensemble tensor nobody reads: decoder-only repositories carry no decoder prompt at all.
    decoder_in = (
        'input_map { key: "decoder_input_ids" value: "_decoder_input_ids" } '
        'input_map { key: "decoder_input_lengths" value: "_decoder_input_lengths" }'
    )
    decoder_out = (
        'output_map { key: "DECODER_INPUT_ID" value: "_decoder_input_ids" } '
        'output_map { key: "REQUEST_DECODER_INPUT_LEN" value: "_decoder_input_lengths" }'
    )
    no_decoder = "# decoder-only: no decoder prompt"
    return {
        **_tokenizer_dirs(repo_dir if target == "trt" else None),
        "name": name,
        "max_batch_size": triton["max_batch_size"],
        "instance_count": triton["instance_count"],
        "max_queue_delay_us": triton["max_queue_delay_us"],
        "decoupled": _bool(triton["decoupled"]),
        "max_beam_width": engine.get("max_beam_width", 1),
        "max_input_len": engine["max_input_len"],
        "max_output_len": engine["max_output_len"],
        "decoder_engine_dir": str(main_engine),
        "encoder_model_path_parameter": _optional_parameter("encoder_model_path", engine_root / "encoder" if encoder_decoder else None),
        "kv_cache_free_gpu_mem_fraction": triton["kv_cache_free_gpu_mem_fraction"],
        # Cross-attention KV cache exists only in encoder-decoder models.
        "cross_kv_cache_fraction_parameter": _optional_parameter(
            "cross_kv_cache_fraction", triton["cross_kv_cache_fraction"] if encoder_decoder else None
        ),
        "encoder_decoder": _bool(encoder_decoder),
        "decoder_input_maps": decoder_in if encoder_decoder else no_decoder,
        "decoder_output_maps": decoder_out if encoder_decoder else no_decoder,
        "batch_scheduler_policy": triton["batch_scheduler_policy"],
        "max_tokens_in_paged_kv_cache_parameter": _optional_parameter(
            "max_tokens_in_paged_kv_cache", triton.get("max_tokens_in_paged_kv_cache")
        ),
    }
