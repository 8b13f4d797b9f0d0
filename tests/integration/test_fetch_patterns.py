"""A Hub fetch takes only what the model's family reads: safetensors before .bin, no TF/Flax/ONNX copies."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tasks.commands.conformance import crosscheck
from tasks.core import hashing
from tasks.core.manifest import is_meta
from tasks.spec.modelspec import ModelSpec
from tasks.stages import fetch
from tests.helpers import copy_project, doit_env, read_json, run_doit
from tests.integration.test_fetch_hub import SHA, hub_yaml, seed_cache

# openai/clip-vit-base-patch32 as the Hub lists it (files and versions, after the safetensors commit).
CLIP_FILES = (
    ".gitattributes", "README.md", "config.json", "flax_model.msgpack", "merges.txt", "model.safetensors",
    "preprocessor_config.json", "pytorch_model.bin", "special_tokens_map.json", "tf_model.h5", "tokenizer.json",
    "tokenizer_config.json", "vocab.json",
)  # fmt: skip
# Weight copies no stage reads, laid beside a real checkpoint so a fetch that took them would show.
EXTRA = {
    "pytorch_model.bin": b"pickled torch weights",
    "tf_model.h5": b"keras weights",
    "flax_model.msgpack": b"flax weights",
    "model.onnx": b"onnx graph",
    "onnx/model.onnx": b"onnx graph in a folder",
    "onnx/model.safetensors": b"onnx export's own weights",
    "README.md": b"model card",
}


def spec(kind: str, family: str) -> ModelSpec:
    source = {"hf": "acme/x", "revision": SHA}
    return ModelSpec(name="m", kind=kind, family=family, file=Path("models/m.yaml"), source=source, blocks={})


def test_clip_vision_takes_config_safetensors_and_preprocessor_only() -> None:
    files = fetch.hub_files(spec("encoder", "clip-vision"))
    assert fetch.select(CLIP_FILES, files) == ["config.json", "model.safetensors", "preprocessor_config.json"]


def test_text_families_take_their_tokenizer_and_llms_their_generation_config() -> None:
    tokenizer = ["merges.txt", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    assert fetch.select(CLIP_FILES, fetch.hub_files(spec("encoder", "clip-text"))) == sorted(
        ["config.json", "model.safetensors", *tokenizer]
    )
    t5 = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "spiece.model",
        "tf_model.h5",
        "tokenizer.json",
    ]
    assert fetch.select(t5, fetch.hub_files(spec("llm", "t5"))) == [
        "config.json", "generation_config.json", "model.safetensors", "spiece.model", "tokenizer.json",
    ]  # fmt: skip


def test_shards_come_with_their_index_and_bin_is_only_the_fallback() -> None:
    files = fetch.hub_files(spec("llm", "llama"))
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    bins = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json"]
    both = ["config.json", "consolidated.00.pth", "original/params.json", *shards, *bins]
    assert fetch.select(both, files) == ["config.json", *shards]
    assert fetch.select([n for n in both if n not in shards], files) == ["config.json", *bins]


def test_the_file_selection_is_part_of_the_fetch_params() -> None:
    _, _, vision = fetch.source_files(spec("encoder", "clip-vision"))
    _, _, text = fetch.source_files(spec("encoder", "clip-text"))
    assert vision["commit"] == SHA
    assert vision["files"]["weights"][0][0] == "model.safetensors"
    assert "preprocessor_config.json" in vision["files"]["allow"]
    assert vision["files"] != text["files"]  # a different selection is a different fetch action key


@pytest.fixture
def wide_repo(tiny_bert: Path, tmp_path: Path) -> Path:
    """tiny BERT as a Hub repository would ship it: safetensors plus .bin, TF, Flax and ONNX copies, a model card."""
    folder = tmp_path / "wide"
    shutil.copytree(tiny_bert, folder)
    for name, data in EXTRA.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def fetched_names(project: Path) -> list[str]:
    out = project / "build/tiny/fetch"
    # The output's own records (manifest.json, action.json, a part's manifest.<part>.json) are not checkpoint files.
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not (p.parent == out and is_meta(p.name)))


def test_fetch_output_holds_only_what_the_family_reads(wide_repo: Path, tiny_bert: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hf-cache"
    seed_cache(cache, "acme/tiny-bert", wide_repo)
    project = copy_project(tmp_path / "p", {"tiny": hub_yaml("main")})
    result = run_doit(project, "fetch:tiny", "target=cpu", env=doit_env({"HF_HUB_CACHE": str(cache)}))
    assert result.rc == 0, result.stdout + result.stderr
    names = fetched_names(project)
    assert "model.safetensors" in names
    assert "config.json" in names
    assert "tokenizer.json" in names
    assert not {"pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.onnx", "README.md"} & set(names)
    assert not (project / "build/tiny/fetch/onnx").exists()
    assert set(names) <= {p.name for p in tiny_bert.iterdir()}
    record = read_json(project / "build/tiny/fetch/action.json")
    assert record["resolved_revision"] == SHA  # the branch, resolved through huggingface_hub's cache
    assert record["fetched_bytes"] == sum((project / "build/tiny/fetch" / n).stat().st_size for n in names)


def test_a_repository_without_safetensors_gives_its_bin(tiny_bert: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bin-only"
    shutil.copytree(tiny_bert, folder)
    # A real pickled state dict: fetch loads it (memory-mapped) to refuse NaN or Inf weights.
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    (folder / "tf_model.h5").write_bytes(b"keras weights")
    cache = tmp_path / "hf-cache"
    seed_cache(cache, "acme/tiny-bert", folder)
    project = copy_project(tmp_path / "p", {"tiny": hub_yaml(SHA)})
    result = run_doit(project, "fetch:tiny", "target=cpu", env=doit_env({"HF_HUB_CACHE": str(cache)}))
    assert result.rc == 0, result.stdout + result.stderr
    names = fetched_names(project)
    assert "pytorch_model.bin" in names
    assert "model.safetensors" not in names
    assert "tf_model.h5" not in names


def test_a_repository_without_weights_a_family_reads_is_one_line(tiny_bert: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tf-only"
    shutil.copytree(tiny_bert, folder)
    (folder / "model.safetensors").rename(folder / "tf_model.h5")
    cache = tmp_path / "hf-cache"
    seed_cache(cache, "acme/tiny-bert", folder)
    project = copy_project(tmp_path / "p", {"tiny": hub_yaml(SHA)})
    result = run_doit(project, "fetch:tiny", "target=cpu", env=doit_env({"HF_HUB_CACHE": str(cache)}))
    assert result.rc != 0
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1
    assert errors[0].startswith(f"ERROR: fetch:tiny: acme/tiny-bert@{SHA} has no config.json with model.safetensors or pytorch_model.bin")


def offline_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_a_branch_resolves_to_the_commit_huggingface_hub_cached(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline_cache(monkeypatch, tmp_path / "hf-cache")
    assert fetch.resolve_revision("acme/tiny-bert", "main") is None  # nothing cached yet
    seed_cache(tmp_path / "hf-cache", "acme/tiny-bert", tiny_bert)
    assert fetch.resolve_revision("acme/tiny-bert", "main") == SHA
    assert fetch.resolve_revision("acme/tiny-bert", "dev") is None
    assert fetch.resolve_revision("acme/other", "main") is None


def test_online_the_download_asks_for_the_selected_names_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(fetch, "_HUB", {"unreachable": False})
    siblings = [SimpleNamespace(rfilename=name) for name in CLIP_FILES]
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda *_a, **_k: SimpleNamespace(siblings=siblings))
    asked: dict[str, Any] = {}
    snapshot = tmp_path / SHA

    def download(repo_id: str, **kwargs: Any) -> str:
        asked.update(kwargs, repo_id=repo_id)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    folder, names = fetch._download("openai/clip-vit-base-patch32", SHA, fetch.hub_files(spec("encoder", "clip-vision")))
    assert folder == snapshot
    assert names == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert asked == {"repo_id": "openai/clip-vit-base-patch32", "revision": SHA, "allow_patterns": names}


def test_file_digest_keeps_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    empty, abc, big = tmp_path / "empty", tmp_path / "abc", tmp_path / "big"
    empty.write_bytes(b"")
    abc.write_bytes(b"abc")
    big.write_bytes(bytes(range(256)) * (12 << 12) + b"tail")  # 12 MiB + 4 bytes: many blocks, a partial last one
    assert hashing.sha256_file(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert hashing.sha256_file(abc) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hashing.sha256_file(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_crosscheck_reads_safetensors_with_the_project_reader(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([0.5, -2.0], dtype=torch.bfloat16)}
    save_file(tensors, str(tmp_path / "rank0.safetensors"))
    loaded = crosscheck._load(tmp_path / "rank0.safetensors")
    assert sorted(loaded) == ["b", "w"]
    assert loaded["w"].dtype == np.float32
    assert loaded["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert loaded["b"].tolist() == [0.5, -2.0]  # bfloat16, widened exactly
