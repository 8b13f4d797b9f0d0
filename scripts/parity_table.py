# ruff: noqa: T201, INP001 - a one-off generator run by path; the JSON it writes is committed
"""Write ``tasks/tools/flagtables/inflight-batcher-1.2.1.json`` from verbatim copies of NVIDIA's inflight-batcher templates.

    python scripts/parity_table.py <folder with ensemble/ preprocessing/ tensorrt_llm/ postprocessing/ tensorrt_llm_bls/> [out.json]

Each ``<model>/config.pbtxt`` is parsed with Triton's ModelConfig proto after its ``${...}`` placeholders are
replaced by parsable stand-ins; a placeholder data type is recorded as written, with what the project's
filler would put there.  Which ``parameters`` keys are required is not in the pbtxt: it comes from reading
the backend's source (kept below, with the reading it rests on).  The ``not_offered`` section of an existing
output file is kept as it is: it is the project's own list, written by hand.  Nothing at run time needs this script.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

MODELS = ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls")
BACKEND_REPO = "triton-inference-server/tensorrtllm_backend"
TRTLLM_REPO = "NVIDIA/TensorRT-LLM"
TEMPLATE_DIR = "triton_backend/all_models/inflight_batcher_llm"
# The commit of NVIDIA/TensorRT-LLM each copy was taken at (the copies carry no version of their own).
COMMITS = {
    "ensemble": "2a9abd9536aa62ad3e4b9314be9286b1b1be523b",
    "preprocessing": "808059da341493bbf8deb9380aef745e4f546909",
    "tensorrt_llm": "2a9abd9536aa62ad3e4b9314be9286b1b1be523b",
    "postprocessing": "89fd9b74ab7ae753b4c6b3db25a400dca7ea54a0",
    "tensorrt_llm_bls": "bff88ea886779f832686acb3f165e2b919c95b77",
}
PROVENANCE = (
    "Copies of triton_backend/all_models/inflight_batcher_llm/<model>/config.pbtxt from public NVIDIA/TensorRT-LLM at the "
    "commits listed per model. They are the closest available to the pinned 1.2.1 and NOT proven identical to release/1.2.1: "
    "several versions of these files exist publicly, which is newest could not be proven, and no copy is proven to be the 1.2.1 "
    "release's. 2a9abd95 (ensemble, tensorrt_llm) is the 1.1.0rc6 dev line (examples/constraints.txt at that commit); 808059da, "
    "89fd9b74 and bff88ea8 are not pinnable, but by content are post-v0.19.0 (min_tokens/seed, return_num_*_tokens, pixtral "
    "IMAGE_SIZES), consistent with the 1.x line. The backend image of 1.2.1 is built from TENSORRTLLM_REPO_TAG=release/1.2.1 "
    "(dockerfile/Dockerfile.triton.trt_llm_backend at tensorrtllm_backend HEAD)."
)
REQUIRED_SOURCE = (
    "Required keys come from reading the backend source, not the pbtxt: tensorrtllm_backend v0.19.0 inflight_batcher_llm/src/"
    "model_instance_state.cc and TRT-LLM triton_backend/inflight_batcher_llm/src/model_instance_state.cc @c8c6df08 (same reads), "
    "and the python models' initialize() (preprocessing @beb339f5, postprocessing @2e2327b9, tensorrt_llm_bls @f20d99bd)."
)
# Keys read with no guard: a missing one fails the model load.
REQUIRED: dict[str, dict[str, str]] = {
    "tensorrt_llm": {
        "gpt_model_type": "GetParameter<std::string> unguarded; must be v1|V1|inflight_batching|inflight_fused_batching",
        "tokenizer_dir": "unguarded since backend c1b90df (v0.19.0); only logged, any value or empty",
        "xgrammar_tokenizer_info_path": "unguarded since v0.19.0; empty (or the ${...} placeholder) turns guided decoding off",
        "guided_decoding_backend": "unguarded since v0.19.0; empty turns guided decoding off, else must be xgrammar",
    },
    "preprocessing": {
        "tokenizer_dir": "model_config['parameters']['tokenizer_dir'] (KeyError); passed to AutoTokenizer.from_pretrained",
        "multimodal_model_path": "unguarded since v0.19.0; empty (or the ${...} placeholder) means not multimodal",
    },
    "postprocessing": {"tokenizer_dir": "model_config['parameters']['tokenizer_dir'] (KeyError)"},
    "ensemble": {},
    "tensorrt_llm_bls": {},
}
# Values the backend accepts for a required key (anything else throws while the instance is created).
ALLOWED_VALUES = {"tensorrt_llm": {"gpt_model_type": ["V1", "v1", "inflight_batching", "inflight_fused_batching"]}}
# Guarded keys whose absence is still fatal under a condition.
CONDITIONAL: dict[str, dict[str, str]] = {
    "tensorrt_llm": {
        "gpt_model_path": "guarded, but the load fails unless it or encoder_model_path names an existing engine directory",
        "encoder_model_path": "guarded, but the load fails unless it or gpt_model_path names an existing engine directory",
        "lookahead_window_size": "read only with decoding_mode lookahead, then missing or unparsable fails the load",
        "lookahead_ngram_size": "read only with decoding_mode lookahead, then missing or unparsable fails the load",
        "lookahead_verification_set_size": "read only with decoding_mode lookahead, then missing or unparsable fails the load",
        "participant_ids": "needed only with TRTLLM_ORCHESTRATOR=1 and TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES=0",
    },
    "preprocessing": {"gpt_model_path": "read unguarded only when multimodal_model_path is set"},
    "ensemble": {},
    "postprocessing": {},
    "tensorrt_llm_bls": {},
}
# A python model's initialize() indexes model_config['parameters'] itself: the section must exist.
NEEDS_PARAMETERS_SECTION = ("tensorrt_llm", "tensorrt_llm_bls")
# What NVIDIA's fill_template.py examples put where a template has a data-type placeholder (the engine's dtype
# may call for another: TYPE_BF16 is also seen).  The project declares none of these tensors.
PLACEHOLDER_TYPES = {
    "logits_datatype": "TYPE_FP32",
    "prompt_embedding_table_data_type": "TYPE_FP16",
    "encoder_input_features_data_type": "TYPE_FP16",
}
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
TYPED_PLACEHOLDER = re.compile(r"data_type:\s*\$\{(\w+)\}")


def git_blob_sha1(data: bytes) -> str:
    """What ``git hash-object`` prints, so a copy can be checked against a real checkout."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def parse(text: str) -> tuple[Any, list[str]]:
    """The parsed config and the data-type placeholders in file order (inputs come before outputs in every template)."""
    if text.index("\ninput [") > text.index("\noutput ["):
        raise SystemExit("expected the input block before the output block")
    typed = TYPED_PLACEHOLDER.findall(text)
    text = TYPED_PLACEHOLDER.sub("data_type: TYPE_INVALID", text)
    text = re.sub(r"decoupled:\s*\$\{\w+\}", "decoupled: false", text)
    text = re.sub(r'(?<!")\$\{\w+\}(?!")', "1", text)  # numbers; quoted placeholders stay strings
    config = model_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    return config, typed


def tensor(t: Any, placeholders: list[str], *, is_input: bool) -> dict[str, Any]:  # noqa: ANN401 - protobuf message
    row: dict[str, Any] = {"name": t.name, "data_type": model_config_pb2.DataType.Name(t.data_type), "dims": list(t.dims)}
    if row["data_type"] == "TYPE_INVALID":
        name = placeholders.pop(0)
        row["data_type"] = f"${{{name}}}"
        row["resolves_to"] = PLACEHOLDER_TYPES[name]
    if is_input:
        row["optional"] = bool(t.optional)
        if t.allow_ragged_batch:
            row["ragged"] = True
    if t.HasField("reshape"):
        row["reshape"] = list(t.reshape.shape)
    return row


def tensors(items: Any, placeholders: list[str], *, is_input: bool) -> list[dict[str, Any]]:  # noqa: ANN401
    rows: list[dict[str, Any]] = []
    for t in items:
        row = tensor(t, placeholders, is_input=is_input)
        twin = next((r for r in rows if r["name"] == row["name"]), None)
        if twin is not None:  # the ensemble declares one output twice, verbatim upstream
            twin["declared_twice"] = True
            continue
        rows.append(row)
    return rows


def model_table(name: str, path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    config, typed = parse(data.decode("utf-8"))
    keys = sorted(config.parameters)
    required, conditional = REQUIRED[name], CONDITIONAL[name]
    missing = sorted(set(required) - set(keys))
    if missing:
        raise SystemExit(f"{path}: required keys {missing} are not in the template: is this the 1.x line?")
    table = {
        "source": {"repository": TRTLLM_REPO, "path": f"{TEMPLATE_DIR}/{name}/config.pbtxt", "commit": COMMITS[name]},
        "git_blob_sha1": git_blob_sha1(data),
        # tensorrt_llm's backend is "${triton_backend}": tensorrtllm (C++) or python.
        "kind": config.platform or config.backend.replace("${triton_backend}", "tensorrtllm"),
        "parameters": {
            "required": required,
            "conditional": conditional,
            "optional": [k for k in keys if k not in required and k not in conditional],
            "section_required": name in NEEDS_PARAMETERS_SECTION,
            "allowed_values": ALLOWED_VALUES.get(name, {}),
        },
        "inputs": tensors(config.input, typed, is_input=True),
        "outputs": tensors(config.output, typed, is_input=False),
    }
    if typed:
        raise SystemExit(f"{path}: placeholders left unassigned: {typed}")
    return table


def main(argv: list[str]) -> int:
    if len(argv) not in {2, 3}:
        print(__doc__)
        return 2
    folder = Path(argv[1])
    out = Path(argv[2]) if len(argv) == 3 else Path(__file__).parents[1] / "tasks/tools/flagtables/inflight-batcher-1.2.1.json"  # noqa: PLR2004
    kept = json.loads(out.read_text(encoding="utf-8")).get("not_offered", {}) if out.is_file() else {}
    table = {
        "tool": "inflight_batcher_llm model templates",
        "version": "1.2.1",
        "source": {"repository": TRTLLM_REPO, "templates": f"{TEMPLATE_DIR}/<model>/config.pbtxt", "backend_repository": BACKEND_REPO},
        "note": PROVENANCE,
        "parameters_note": REQUIRED_SOURCE,
        "generated_by": "scripts/parity_table.py",
        "models": {name: model_table(name, folder / name / "config.pbtxt") for name in MODELS},
        "not_offered": kept,
    }
    out.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    counts = {n: (len(m["inputs"]), len(m["outputs"])) for n, m in table["models"].items()}
    print(f"wrote {out}: (inputs, outputs) per model {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
