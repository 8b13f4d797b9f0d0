"""``source:`` and the other files a model file names (prompts, calibration cache, corpus), checked and located."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.core import fsops
from tasks.core.errors import shown_text
from tasks.spec.modelspec import ModelSpec, Where, path_text, text

# ---- source --------------------------------------------------------------------------------


def check_source(raw: Any, where: Where) -> dict[str, str]:  # noqa: ANN401
    kinds = [k for k in ("hf", "pip", "path") if isinstance(raw, dict) and k in raw]
    if not isinstance(raw, dict) or len(kinds) != 1:
        raise where.error("expected exactly one of {hf: <repo id>, revision: <sha|branch>}, {pip: <package>}, {path: <folder>}")
    allowed = {"hf": ("hf", "revision"), "pip": ("pip",), "path": ("path",)}[kinds[0]]
    for key in raw:
        if key not in allowed:
            raise where.child(str(key)).error(f"unknown key for a {kinds[0]} source (known: {', '.join(allowed)})")
    out = {key: (path_text if key == "path" else text)(raw[key], where.child(key)) for key in raw}
    if kinds[0] == "hf" and "revision" not in out:
        raise where.child("revision").error("required: a commit sha, or a branch written explicitly (e.g. main)")
    return out


def checkpoint_config(source: Mapping[str, str], yaml_file: Path) -> dict[str, Any] | None:
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


def is_file(path: Path, where: Where) -> bool:
    """``path.is_file()``, with a file system refusal (name too long, no permission) reported for ``where``."""
    try:
        return path.is_file()
    except OSError as exc:
        raise where.error(f"cannot look up {shown_text(path)}: {exc.strerror}") from None


def check_calibration(spec: ModelSpec) -> None:
    path = calibration_file(spec)
    if path is not None and not is_file(path, Where(str(spec.file), "engine.calibration_cache")):
        msg = f"no such file: {shown_text(path)} (a TensorRT INT8 calibration cache, e.g. from polygraphy; relative to the model file)"
        raise Where(str(spec.file), "engine.calibration_cache").error(msg)


def corpus_file(spec: ModelSpec) -> Path | None:
    """``index.corpus`` (None: no index)."""
    return model_relative(spec, "index", "corpus")


def read_corpus(path: Path, where: Where) -> list[str]:
    """The corpus lines: texts, or image paths relative to the corpus file."""
    try:
        items = fsops.read_lines(path)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"not UTF-8: {exc.reason} at byte {exc.start}"
        msg = f"cannot read {shown_text(path)} ({why}); expected a UTF-8 file with one item per line, relative to the model file"
        raise where.error(msg) from None
    if not items:
        raise where.error(f"{shown_text(path)} has no items (one text, or one image path, per line)")
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
        if not is_file(image, Where(str(spec.file), "index.corpus")):
            msg = f"{shown_text(corpus)}: line {number}: no such image file {shown_text(image)}"
            raise Where(str(spec.file), "index.corpus").error(msg)
        images.append(image)
    return images


def check_prompts(spec: ModelSpec) -> None:
    path = prompts_file(spec)
    if path is not None and not is_file(path, Where(str(spec.file), "bench.prompts")):
        msg = f"no such file: {shown_text(path)} (one prompt per line; relative to the model file)"
        raise Where(str(spec.file), "bench.prompts").error(msg)
