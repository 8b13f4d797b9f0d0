"""Model files: ``models/<name>.yaml`` parsed, checked and completed with defaults.

Every key is either understood or an error; nothing is ignored.  Errors read
``models/minilm.yaml: engine.max_batch_size: expected an integer >= 1, got 'x'``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasks.bench import metrics
from tasks.core import fsops
from tasks.core.errors import YamlError
from tasks.spec import sweep
from tasks.tools import trtexec, trtllm

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
SHA_RE = re.compile(r"[0-9a-f]{40}")
TOP_KEYS = ("name", "kind", "family", "source", "members", "index", "export", "convert", "engine", "triton", "bench", "sweep", "compare")
KINDS = ("encoder", "llm", "ensemble")
IMPLEMENTED_KINDS = {"encoder": ("bert", "clip-vision", "clip-text"), "llm": ("t5", "gpt2", "llama", "gemma"), "ensemble": ()}
# Which encoder families take images; the rest take text.
IMAGE_FAMILIES = ("clip-vision",)
MEMBER_ROLES = {"image": "an image encoder (family clip-vision)", "text": "a text encoder (family bert or clip-text)"}
REQUIRED = object()

Check = Callable[[Any, "Where"], Any]


@dataclass(frozen=True)
class Where:
    """The file and dotted key a value came from, for one-line errors."""

    file: str
    key: str

    def child(self, key: str) -> Where:
        return Where(self.file, f"{self.key}.{key}" if self.key else key)

    def error(self, message: str) -> YamlError:
        return YamlError(self.file, self.key, message)


@dataclass(frozen=True)
class ModelSpec:
    """A validated model file; blocks hold every key with defaults filled in."""

    name: str
    kind: str
    family: str
    file: Path
    source: Mapping[str, str]
    blocks: Mapping[str, Mapping[str, Any]]
    written: frozenset[str] = frozenset()  # top-level keys present in the file
    point: sweep.Point | None = None  # this variant's swept values (None: the file has no sweep:)
    variants: tuple[ModelSpec, ...] = ()  # a swept file's variants, in sweep order
    corpus_images: tuple[Path, ...] = ()  # the image files an image index's corpus lists (read once, at load)

    def block(self, name: str) -> Mapping[str, Any]:
        return self.blocks.get(name, {})

    @property
    def variant(self) -> str:
        """``<name>``, or ``<name>@<swept values>`` for one point of a sweep."""
        return self.point.name(self.name) if self.point else self.name

    @property
    def settings(self) -> dict[str, Any]:
        """The swept values of this variant by dotted path (empty without a sweep)."""
        return dict(self.point.values) if self.point else {}

    def owner(self, blocks: tuple[str, ...]) -> str:
        """The name a stage reading only ``blocks`` is built under: shared by variants agreeing on them."""
        return self.point.name(self.name, blocks) if self.point else self.name


# ---- scalar checks -------------------------------------------------------------------------


def integer(low: int, high: int | None = None) -> Check:
    bound = f">= {low}" if high is None else f"between {low} and {high}"

    def check(value: Any, where: Where) -> int:  # noqa: ANN401 - raw YAML value
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or value < low or (high is not None and value > high):
            raise where.error(f"expected an integer {bound}, got {value!r}")
        return int(value)

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any, where: Where) -> str:  # noqa: ANN401
        if value not in choices:
            raise where.error(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return check


def fraction(value: Any, where: Where) -> float:  # noqa: ANN401
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1
    if not ok:
        raise where.error(f"expected a number in (0, 1], got {value!r}")
    return float(value)


def optional(check: Check) -> Check:
    """``null`` allowed (meaning: leave the tool's own default)."""

    def maybe(value: Any, where: Where) -> Any:  # noqa: ANN401
        return None if value is None else check(value, where)

    return maybe


def boolean(value: Any, where: Where) -> bool:  # noqa: ANN401
    if not isinstance(value, bool):
        raise where.error(f"expected true or false, got {value!r}")
    return value


def text(value: Any, where: Where) -> str:  # noqa: ANN401
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"expected a non-empty string, got {value!r}")
    return value


def int_list(value: Any, where: Where) -> list[int]:  # noqa: ANN401
    if not isinstance(value, list) or not value:
        raise where.error(f"expected a non-empty list of integers >= 1, got {value!r}")
    return [integer(1)(item, where.child(str(i))) for i, item in enumerate(value)]


def str_list(value: Any, where: Where) -> list[str]:  # noqa: ANN401
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(f"expected a list of strings, got {value!r}")
    return list(value)


def scalar_map(value: Any, where: Where) -> dict[str, Any]:  # noqa: ANN401
    if not isinstance(value, dict):
        raise where.error(f"expected a mapping of flag name to value, got {value!r}")
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool):
            raise where.child(str(key)).error(f"expected a string, number or boolean, got {item!r}")
    return dict(value)


def positive(value: Any, where: Where) -> float:  # noqa: ANN401
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise where.error(f"expected a number > 0, got {value!r}")
    return float(value)


def gpu_list(value: Any, where: Where) -> list[int]:  # noqa: ANN401
    """GPU indices (as nvidia-smi numbers them), each once."""
    if not isinstance(value, list) or not value or len(set(map(str, value))) != len(value):
        raise where.error(f"expected a non-empty list of distinct GPU indices >= 0, got {value!r}")
    return [integer(0)(item, where.child(str(i))) for i, item in enumerate(value)]


def distinct_int_list(value: Any, where: Where) -> list[int]:  # noqa: ANN401
    items = int_list(value, where)
    if len(set(items)) != len(items):
        raise where.error(f"expected each value once, got {value!r}")
    return items


# ---- blocks --------------------------------------------------------------------------------

BENCH_TOOLS = ("builtin", "perf_analyzer", "genai-perf")
# perf_analyzer's defaults where it has one (5 s windows, ±10 %, 10 trials).
BENCH_COMMON: dict[str, tuple[Check, Any]] = {
    "concurrency": (distinct_int_list, [1]),
    "tool": (one_of("builtin", "perf_analyzer"), "builtin"),
    "measurement_interval_ms": (integer(50), 5000),
    "stability_percentage": (positive, 10.0),
    "max_trials": (integer(3), 10),
    "warmup_requests": (integer(0), 10),
    "request_timeout_s": (integer(1), 60),
    "prompts": (optional(text), None),
    "num_prompts": (integer(1), 100),
    "input_tokens": (integer(1), 32),
    "seed": (integer(0), 0),
}

ENCODER_BLOCKS: dict[str, dict[str, tuple[Check, Any]]] = {
    "export": {
        "opset": (integer(17, 23), 18),
        "pooling": (one_of("mean", "cls"), "mean"),
        "normalize": (boolean, True),
    },
    "engine": {
        "max_batch_size": (integer(1), REQUIRED),
        "max_seq_len": (integer(1), REQUIRED),
        "opt_batch_size": (integer(1), None),
        "opt_seq_len": (integer(1), None),
        "precision": (one_of("fp32", "fp16", "bf16", "int8", "best"), "fp32"),
        "calibration_cache": (optional(text), None),
        "timing_cache": (boolean, True),
        "workspace_mb": (integer(1), None),
        "flags": (scalar_map, {}),
        "extra_args": (str_list, []),
    },
    "triton": {
        "max_batch_size": (integer(1), REQUIRED),
        "instance_count": (integer(1), 1),
        "max_queue_delay_us": (integer(0), 100),
    },
    "bench": {
        **BENCH_COMMON,
        "batch_size": (integer(1), 1),
    },
}
# Keys that only mean something for one family or modality.
_TEXT_ONLY: dict[str, tuple[str, ...]] = {"engine": ("max_seq_len", "opt_seq_len")}
_BERT_ONLY: dict[str, tuple[str, ...]] = {"export": ("pooling",)}


def encoder_blocks(family: str) -> dict[str, dict[str, tuple[Check, Any]]]:
    """The encoder field tables for one family: an image has no sequence, only BERT pools."""
    image = family in IMAGE_FAMILIES
    drop: dict[str, tuple[str, ...]] = dict(_TEXT_ONLY) if image else {}
    if family != "bert":
        drop["export"] = _BERT_ONLY["export"]
    blocks = {block: {k: v for k, v in fields.items() if k not in drop.get(block, ())} for block, fields in ENCODER_BLOCKS.items()}
    if image:
        del blocks["bench"]
    return blocks


ENSEMBLE_BLOCKS: dict[str, dict[str, tuple[Check, Any]]] = {
    "members": {role: (optional(text), None) for role in MEMBER_ROLES},
    "triton": {
        "max_batch_size": (integer(1), REQUIRED),
        "instance_count": (integer(1), 1),
    },
}
# Optional: only an ensemble whose file has an index: block gets index:<m> and <m>_search.
INDEX_FIELDS: dict[str, tuple[Check, Any]] = {
    "member": (one_of(*MEMBER_ROLES), REQUIRED),
    "corpus": (text, REQUIRED),
    "top_k": (integer(1), 5),
    "batch_size": (integer(1), 8),
}
LLM_BLOCKS: dict[str, dict[str, tuple[Check, Any]]] = {
    "convert": {
        "dtype": (one_of("float16", "bfloat16", "float32"), "float16"),
        "tp_size": (integer(1), 1),
        "pp_size": (integer(1), 1),
    },
    "engine": {
        "max_batch_size": (integer(1), REQUIRED),
        "max_input_len": (integer(1), REQUIRED),
        "max_output_len": (integer(1), REQUIRED),
        "max_beam_width": (integer(1), 1),
        "max_num_tokens": (optional(integer(1)), None),
        "flags": (scalar_map, {}),
        "encoder_flags": (scalar_map, {}),
        "decoder_flags": (scalar_map, {}),
        "extra_args": (str_list, []),
    },
    "triton": {
        "max_batch_size": (integer(1), REQUIRED),
        "decoupled": (boolean, False),
        "instance_count": (integer(1), 1),
        "max_queue_delay_us": (integer(0), 0),
        "kv_cache_free_gpu_mem_fraction": (fraction, 0.8),
        "cross_kv_cache_fraction": (fraction, 0.5),
        "batch_scheduler_policy": (one_of("guaranteed_no_evict", "max_utilization"), "guaranteed_no_evict"),
        "max_tokens_in_paged_kv_cache": (optional(integer(1)), None),
        "gpus": (optional(gpu_list), None),
    },
    "bench": {
        **BENCH_COMMON,
        "tool": (one_of(*BENCH_TOOLS), "builtin"),
        "model": (one_of("ensemble", "tensorrt_llm_bls"), "ensemble"),
        "output_tokens": (integer(1), 16),
        "ignore_eos": (boolean, False),
    },
}
_MEMBERS = "only a kind: ensemble model has members"
_INDEX = "only a kind: ensemble model has an index (index.member names one of its members)"
NOT_FOR = {
    "encoder": {"convert": "encoders are exported to ONNX (export:), not converted", "members": _MEMBERS, "index": _INDEX},
    "llm": {
        "export": "LLM checkpoints are converted (convert:), not exported to ONNX",
        "members": _MEMBERS,
        "index": _INDEX,
    },
    "ensemble": {
        "family": "an ensemble has no family; its members (members:) have one",
        "source": "an ensemble has no checkpoint; it serves its members' artifacts",
        "export": "an ensemble is built from its members' artifacts; export: belongs in their files",
        "convert": "an ensemble is built from its members' artifacts; convert: belongs in their files",
        "engine": "an ensemble is built from its members' artifacts; engine: belongs in their files",
        "bench": "benchmarks of an ensemble are not implemented yet; benchmark its members (bench: in their files)",
        "sweep": "an ensemble is built from its members' artifacts; it has nothing of its own to sweep",
        "compare": "an ensemble has no variants to compare",
    },
}
IMAGE_NOT_FOR = {"bench": "benchmarks of image encoders are not implemented yet (no image workload); remove bench:"}


def kind_blocks(kind: str, family: str) -> dict[str, dict[str, tuple[Check, Any]]]:
    if kind == "encoder":
        return encoder_blocks(family)
    return LLM_BLOCKS if kind == "llm" else ENSEMBLE_BLOCKS


def _not_for(kind: str, family: str) -> dict[str, str]:
    return {**NOT_FOR[kind], **(IMAGE_NOT_FOR if family in IMAGE_FAMILIES else {})}


def check_block(raw: Any, fields: Mapping[str, tuple[Check, Any]], where: Where) -> dict[str, Any]:  # noqa: ANN401
    """Validate one block against its field table and fill in defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise where.error(f"expected a mapping, got {raw!r}")
    for key in raw:
        if key not in fields:
            raise where.child(str(key)).error(f"unknown key (known: {', '.join(fields)})")
    out: dict[str, Any] = {}
    for key, (check, default) in fields.items():
        if key in raw:
            out[key] = check(raw[key], where.child(key))
        elif default is REQUIRED:
            raise where.child(key).error("required key is missing")
        else:
            out[key] = default
    return out


def _check_precision(engine: dict[str, Any], where: Where) -> None:
    # int8 without calibration scales builds a plan whose outputs are noise: refuse it.
    if engine["precision"] == "int8" and engine["calibration_cache"] is None:
        msg = "required when engine.precision is int8: a TensorRT calibration cache file (trtexec --calib), relative to the model file"
        raise where.child("calibration_cache").error(msg)
    if engine["calibration_cache"] is not None and engine["precision"] not in ("int8", "best"):
        msg = f"only used with engine.precision int8 or best (trtexec --calib), but precision is {engine['precision']}; remove it"
        raise where.child("calibration_cache").error(msg)


def _check_encoder_engine(engine: dict[str, Any], where: Where) -> None:
    _check_precision(engine, where)
    for opt, limit in (("opt_batch_size", "max_batch_size"), ("opt_seq_len", "max_seq_len")):
        if limit not in engine:
            continue
        if engine[opt] is None:
            engine[opt] = engine[limit]
        elif engine[opt] > engine[limit]:
            msg = f"expected an integer <= engine.{limit} ({engine[limit]}), got {engine[opt]}"
            raise where.child(opt).error(msg)
    problem = trtexec.check_flags(engine["flags"], trtexec.static_table())
    if problem:
        raise where.child(f"flags.{problem[0]}").error(problem[1])


def _check_triton(triton: dict[str, Any], engine: dict[str, Any], where: Where) -> None:
    # The TRT-LLM backend silently keeps the engine's limit when the pbtxt asks for more.
    if triton["max_batch_size"] > engine["max_batch_size"]:
        msg = f"expected <= engine.max_batch_size ({engine['max_batch_size']}), got {triton['max_batch_size']}"
        raise where.child("max_batch_size").error(msg)


def _check_llm(blocks: dict[str, dict[str, Any]], family: str, where: Where) -> None:
    convert = blocks["convert"]
    if family != "t5":
        for key in ("encoder_flags", "decoder_flags"):
            if blocks["engine"][key]:
                raise where.child(f"engine.{key}").error(
                    f"only for encoder-decoder models (family t5); a {family} model has one engine: use engine.flags"
                )
    if family == "t5" and convert["pp_size"] != 1:
        msg = (
            "expected 1 for encoder-decoder models (TRT-LLM's C++ runtime and Triton do not support "
            f"pipeline parallelism for enc-dec; use tp_size), got {convert['pp_size']}"
        )
        raise where.child("convert.pp_size").error(msg)
    gpus = blocks["triton"]["gpus"]
    world = convert["tp_size"] * convert["pp_size"]
    if gpus is not None and len(gpus) != world:
        msg = f"expected tp_size x pp_size = {world} GPU indices (one per rank), got {len(gpus)}: {gpus}"
        raise where.child("triton.gpus").error(msg)
    problem = trtllm.check_engine_flags(blocks["engine"], family)
    if problem is not None:
        raise where.child(f"engine.{problem[0]}").error(problem[1])


def _check_bench(blocks: dict[str, dict[str, Any]], kind: str, written: Any, where: Where) -> None:  # noqa: ANN401 - raw YAML
    bench, engine = blocks["bench"], blocks["engine"]
    limit = "max_seq_len" if kind == "encoder" else "max_input_len"
    written = written if isinstance(written, dict) else {}
    # Defaults never exceed the engine's limits; only values the user wrote can.
    if "input_tokens" not in written:
        bench["input_tokens"] = min(bench["input_tokens"], engine[limit])
    if kind == "llm" and "output_tokens" not in written:
        bench["output_tokens"] = min(bench["output_tokens"], engine["max_output_len"])
    if bench["input_tokens"] > engine[limit]:
        raise where.child("input_tokens").error(f"expected <= engine.{limit} ({engine[limit]}), got {bench['input_tokens']}")
    if kind == "llm" and bench["output_tokens"] > engine["max_output_len"]:
        msg = f"expected <= engine.max_output_len ({engine['max_output_len']}), got {bench['output_tokens']}"
        raise where.child("output_tokens").error(msg)
    if "batch_size" in bench and bench["batch_size"] > blocks["triton"]["max_batch_size"]:
        msg = f"expected <= triton.max_batch_size ({blocks['triton']['max_batch_size']}), got {bench['batch_size']}"
        raise where.child("batch_size").error(msg)


def _check_members(members: dict[str, Any], where: Where) -> None:
    named = [m for m in members.values() if m is not None]
    if not named:
        raise where.error(f"expected at least one of {', '.join(MEMBER_ROLES)}: the name of a model file in the same folder")
    if len(set(named)) != len(named):
        raise where.error(f"expected different models per role, got {named}")


def _check_index(raw: Any, blocks: dict[str, dict[str, Any]], where: Where) -> dict[str, Any]:  # noqa: ANN401 - raw YAML
    index = check_block(raw, INDEX_FIELDS, where)
    member = blocks["members"][index["member"]]
    if member is None:
        raise where.child("member").error(f"expected a role named in members: ({', '.join(r for r, m in blocks['members'].items() if m)})")
    if index["batch_size"] > blocks["triton"]["max_batch_size"]:
        msg = f"expected <= triton.max_batch_size ({blocks['triton']['max_batch_size']}), got {index['batch_size']}"
        raise where.child("batch_size").error(msg)
    return index


def check_blocks(data: dict[str, Any], kind: str, family: str, where: Where) -> dict[str, dict[str, Any]]:
    """Every block of ``kind`` validated, defaults filled, cross-checked."""
    for key, why in _not_for(kind, family).items():
        if key in data:
            raise where.child(key).error(why)
    blocks = {block: check_block(data.get(block), fields, where.child(block)) for block, fields in kind_blocks(kind, family).items()}
    if kind == "ensemble":
        _check_members(blocks["members"], where.child("members"))
        if "index" in data:
            blocks["index"] = _check_index(data["index"], blocks, where.child("index"))
        return blocks
    if kind == "encoder":
        _check_encoder_engine(blocks["engine"], where.child("engine"))
    else:
        _check_llm(blocks, family, where)
    _check_triton(blocks["triton"], blocks["engine"], where.child("triton"))
    if "bench" in blocks:
        _check_bench(blocks, kind, data.get("bench"), where.child("bench"))
    return blocks


# ---- source --------------------------------------------------------------------------------


def check_source(raw: Any, where: Where) -> dict[str, str]:  # noqa: ANN401
    kinds = [k for k in ("hf", "pip", "path") if isinstance(raw, dict) and k in raw]
    if not isinstance(raw, dict) or len(kinds) != 1:
        raise where.error("expected exactly one of {hf: <repo id>, revision: <sha|branch>}, {pip: <package>}, {path: <folder>}")
    allowed = {"hf": ("hf", "revision"), "pip": ("pip",), "path": ("path",)}[kinds[0]]
    for key in raw:
        if key not in allowed:
            raise where.child(str(key)).error(f"unknown key for a {kinds[0]} source (known: {', '.join(allowed)})")
    out = {key: text(raw[key], where.child(key)) for key in raw}
    if kinds[0] == "hf" and "revision" not in out:
        raise where.child("revision").error("required: a commit sha, or a branch written explicitly (e.g. main)")
    return out


def _checkpoint_config(source: Mapping[str, str], yaml_file: Path) -> dict[str, Any] | None:
    """config.json of a local source, read without downloading anything (None if unknown)."""
    if "path" not in source:
        return None
    folder = Path(source["path"])
    folder = folder if folder.is_absolute() else yaml_file.parent / folder
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_limits(spec: ModelSpec, hf_config: Mapping[str, Any] | None) -> None:
    """Engine limits the checkpoint cannot support fail here, not deep inside a build."""
    if hf_config is None:
        return
    # A full CLIP checkpoint keeps the text tower's limit in text_config.
    text_config = hf_config.get("text_config") if spec.family == "clip-text" else None
    limit = (text_config if isinstance(text_config, dict) else hf_config).get("max_position_embeddings")
    seq = spec.block("engine").get("max_seq_len")
    if isinstance(limit, int) and isinstance(seq, int) and seq > limit:
        where = Where(str(spec.file), "engine.max_seq_len")
        raise where.error(f"expected <= {limit} (max_position_embeddings of the checkpoint), got {seq}")


def model_relative(spec: ModelSpec, block: str, key: str) -> Path | None:
    """A path written in the model file, resolved against the file's folder (None when unset)."""
    written = spec.block(block).get(key)
    if written is None:
        return None
    path = Path(written)
    return path if path.is_absolute() else spec.file.parent / path


def world_size(spec: ModelSpec) -> int:
    """Ranks of the model's engines (1 for encoders): one GPU and one server process each."""
    convert = spec.block("convert")
    return int(convert.get("tp_size", 1)) * int(convert.get("pp_size", 1))


def server_ranks(spec: ModelSpec) -> dict[str, Any]:
    """One server process per engine rank (LLMs with tp_size x pp_size > 1), on the GPUs ``triton.gpus`` names."""
    return {"world_size": world_size(spec), "gpus": list(spec.block("triton").get("gpus") or [])}


def prompts_file(spec: ModelSpec) -> Path | None:
    """``bench.prompts`` (None: synthetic prompts)."""
    return model_relative(spec, "bench", "prompts")


def calibration_file(spec: ModelSpec) -> Path | None:
    """``engine.calibration_cache``."""
    return model_relative(spec, "engine", "calibration_cache")


def check_calibration(spec: ModelSpec) -> None:
    path = calibration_file(spec)
    if path is not None and not path.is_file():
        msg = f"no such file: {path} (a TensorRT INT8 calibration cache, e.g. from polygraphy; relative to the model file)"
        raise Where(str(spec.file), "engine.calibration_cache").error(msg)


def corpus_file(spec: ModelSpec) -> Path | None:
    """``index.corpus`` (None: no index)."""
    return model_relative(spec, "index", "corpus")


def read_corpus(path: Path, where: Where) -> list[str]:
    """The corpus lines: texts, or image paths relative to the corpus file."""
    try:
        items = fsops.read_lines(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error(f"cannot read {path} ({exc}); expected a UTF-8 file with one item per line, relative to the model file") from None
    if not items:
        raise where.error(f"{path} has no items (one text, or one image path, per line)")
    return items


def corpus_item_path(corpus: Path, item: str) -> Path:
    """An image corpus line: absolute, or relative to the corpus file."""
    return Path(item) if Path(item).is_absolute() else corpus.parent / item


def check_corpus(spec: ModelSpec) -> list[Path]:
    """Read the corpus once: every line for a text index; for an image index, the image files it lists.

    The image files are returned (their bytes are the index stage's inputs); a text corpus gives none.
    """
    corpus = corpus_file(spec)
    if corpus is None:
        return []
    items = read_corpus(corpus, Where(str(spec.file), "index.corpus"))
    if spec.block("index")["member"] != "image":
        return []
    images = []
    for number, item in enumerate(items, start=1):
        image = corpus_item_path(corpus, item)
        if not image.is_file():
            raise Where(str(spec.file), "index.corpus").error(f"{corpus}: line {number}: no such image file {image}")
        images.append(image)
    return images


def check_prompts(spec: ModelSpec) -> None:
    path = prompts_file(spec)
    if path is not None and not path.is_file():
        raise Where(str(spec.file), "bench.prompts").error(f"no such file: {path} (one prompt per line; relative to the model file)")


# ---- file ----------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:  # noqa: FBT001, FBT002 - PyYAML API
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {line})", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, shown: str) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(shown, "", f"{line}not valid YAML: {problem}") from None
    except OSError as exc:
        raise YamlError(shown, "", f"cannot read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise YamlError(shown, "", f"expected a mapping of keys (name, kind, source, ...), got {type(data).__name__}")
    return data


def _check_top(data: dict[str, Any], stem: str, where: Where) -> tuple[str, str, str]:
    for key in data:
        if key not in TOP_KEYS:
            raise where.child(str(key)).error(f"unknown key (known: {', '.join(TOP_KEYS)})")
    for key in ("name", "kind"):
        if key not in data:
            raise where.child(key).error("required key is missing")
    name = text(data["name"], where.child("name"))
    if not NAME_RE.fullmatch(name):
        raise where.child("name").error(f"expected [a-z0-9][a-z0-9._-]* (lowercase, digits, '.', '_', '-'), got {name!r}")
    if name != stem:
        raise where.child("name").error(f"must equal the file name {stem!r}, got {name!r}")
    kind = one_of(*KINDS)(data["kind"], where.child("kind"))
    return name, kind, _check_family(data, kind, where)


def _check_family(data: dict[str, Any], kind: str, where: Where) -> str:
    if kind == "ensemble":
        return ""
    for key in ("family", "source"):
        if key not in data:
            raise where.child(key).error("required key is missing")
    family = text(data["family"], where.child("family"))
    families = IMPLEMENTED_KINDS[kind]
    if family not in families:
        raise where.child("family").error(f"family {family!r} is not implemented yet for kind {kind} (implemented: {', '.join(families)})")
    return family


def load_model(path: Path, shown: str | None = None) -> ModelSpec:
    """Parse and validate one model file; raise YamlError naming file and key.

    A file with ``sweep:`` gives one spec per point (its ``variants``); the returned spec
    stands for the file and carries the first point's blocks.
    """
    shown = shown or str(path)
    data = read_yaml(path, shown)
    where = Where(shown, "")
    name, kind, family = _check_top(data, path.stem, where)
    if kind == "ensemble" or "sweep" not in data:
        if "compare" in data and kind != "ensemble":
            raise where.child("compare").error("only used with sweep: (it picks the best variant of a sweep)")
        return _validated(data, path, shown, (name, kind, family), None, {})
    fields = kind_blocks(kind, family)
    settings = sweep.check_sweep(data["sweep"], data, fields, shown)
    read: dict[str, Any] = {}  # the checkpoint's config.json, read once for all points
    variants = tuple(
        _validated(sweep.apply(data, point), path, shown, (name, kind, family), point, read) for point in sweep.points(settings, shown)
    )
    compare = check_compare(data, kind, where.child("compare"))
    extra = {"compare": compare} if compare else {}
    variants = tuple(dataclasses.replace(v, blocks={**v.blocks, **extra}) for v in variants)
    first = variants[0]
    return dataclasses.replace(first, written=frozenset(map(str, data)), point=None, variants=variants)


def _validated(  # noqa: PLR0917 - one file's pieces, passed on as they were parsed
    data: dict[str, Any], path: Path, shown: str, top: tuple[str, str, str], point: sweep.Point | None, read: dict[str, Any]
) -> ModelSpec:
    name, kind, family = top
    where = Where(shown, "")
    try:
        blocks = check_blocks(data, kind, family, where)
    except YamlError as exc:
        if point is None:
            raise
        # The key is the one the rule names; which point broke it is what the user needs next.
        raise YamlError(exc.path, exc.key, f"{exc.message} (in the sweep point {point.name(name)})") from None
    source = check_source(data["source"], where.child("source")) if kind != "ensemble" else {}
    spec = ModelSpec(name, kind, family, Path(shown), source, blocks, frozenset(map(str, data)), point)
    if "config" not in read:
        read["config"] = _checkpoint_config(source, path)
    check_limits(spec, read["config"])
    check_prompts(spec)
    check_calibration(spec)
    images = check_corpus(spec)
    return dataclasses.replace(spec, corpus_images=tuple(images)) if images else spec


def _limits(columns: tuple[str, ...]) -> Check:
    def check(value: Any, where: Where) -> dict[str, float]:  # noqa: ANN401 - raw YAML
        if not isinstance(value, dict):
            raise where.error(f"expected a mapping of bench CSV column to its upper bound, e.g. {{p99 latency: 50000}}, got {value!r}")
        for key in value:
            if key not in columns:
                raise where.child(str(key)).error(f"unknown column (known: {', '.join(columns)})")
        return {str(k): positive(v, where.child(str(k))) for k, v in value.items()}

    return check


def check_compare(data: dict[str, Any], kind: str, where: Where) -> dict[str, Any] | None:
    """``compare:`` (what makes a variant best), filled with defaults; None without a bench: block."""
    if "bench" not in data:
        if "compare" in data:
            raise where.error("needs a bench: block: variants are compared on their benchmark results")
        return None
    columns = metrics.columns(kind == "llm")[1:]  # everything measured; Concurrency is the axis
    fields: dict[str, tuple[Check, Any]] = {
        "maximize": (one_of(*columns), metrics.THROUGHPUT),
        "limits": (_limits(columns), {}),
    }
    return check_block(data.get("compare"), fields, where)


def load_models(folder: Path) -> list[ModelSpec]:
    """All ``*.yaml`` files of ``folder``, sorted by name."""
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    specs = [load_model(p, p.as_posix()) for p in files]
    check_members(specs)
    return specs


def member_problem(role: str, member: ModelSpec) -> str | None:
    """Why ``member`` cannot fill ``role`` of an ensemble, or None."""
    if member.kind != "encoder" or (role == "image") != (member.family in IMAGE_FAMILIES):
        return f"expected {MEMBER_ROLES[role]}, but {member.file} is kind {member.kind}, family {member.family}"
    return None


def find_member(specs: list[ModelSpec], name: str, where: Where) -> ModelSpec:
    """The model (or, for a swept model, the one variant) a ``members:`` entry names."""
    base = sweep.base_name(name)
    model = next((s for s in specs if s.name == base), None)
    if model is None:
        raise where.error(f"no model file {base}.yaml in the same folder")
    if not model.variants:
        if name != base:
            raise where.error(f"{model.file} has no sweep:, so no variant {name}; name the model: {base}")
        return model
    found = next((v for v in model.variants if v.variant == name), None)
    if found is None:
        # A member is one build: of a swept model, one of its variants, named in full.
        known = ", ".join(v.variant for v in model.variants)
        raise where.error(f"{model.file} has a sweep: name one of its variants ({known})")
    return found


def check_members(specs: list[ModelSpec]) -> None:
    """Members of every ensemble exist, fit their role and can take its batches."""
    for spec in specs:
        for role, name in spec.block("members").items():
            if name is None:
                continue
            where = Where(str(spec.file), f"members.{role}")
            member = find_member(specs, name, where)
            problem = member_problem(role, member)
            if problem is not None:
                raise where.error(problem)
            limit = member.block("triton")["max_batch_size"]
            if spec.block("triton")["max_batch_size"] > limit:
                wanted = spec.block("triton")["max_batch_size"]
                msg = f"expected <= triton.max_batch_size of {name} ({limit}): requests are passed on whole, got {wanted}"
                raise Where(str(spec.file), "triton.max_batch_size").error(msg)
