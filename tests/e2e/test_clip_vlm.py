"""CLIP vision and the vlm ensemble on target cpu: a tiny random CLIP, real doit runs, the real Triton.

``repos/vlm`` is built from its members' stages (the members' own repositories are never
built) and served alone; its embeddings are compared with PyTorch's.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from tasks.commands.conformance.fixtures import generated_images
from tasks.triton.launcher import TritonServer
from tests.helpers import CLIP_TEXT_YAML, CLIP_VISION_YAML, SENTENCES, TINY_YAML, VLM_YAML, copy_project, edit, run_doit

TEXTS = ["a man is eating food", "a monkey is playing drums", "triton serves models on cpu and gpu"]
CORPUS = SENTENCES[:6] + SENTENCES[7:8]  # 7 items; "a monkey is playing drums" is row 6
INDEX = "index:\n  member: {role}\n  corpus: {corpus}\n  top_k: 3\n"


def pytorch_image_embeds(checkpoint: Path, images: list[bytes]) -> np.ndarray[Any, Any]:
    """transformers' own pipeline: the PIL CLIP image processor, then the vision tower's ``image_embeds``."""
    import torch
    from transformers import CLIPVisionModelWithProjection
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil.from_pretrained(checkpoint)
    model = CLIPVisionModelWithProjection.from_pretrained(checkpoint).eval()  # type: ignore[no-untyped-call]
    pictures: list[Image.Image] = [Image.open(io.BytesIO(b)) for b in images]
    pixels = processor(pictures, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeds: np.ndarray[Any, Any] = model(pixel_values=pixels).image_embeds.numpy()
    return embeds


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    similarity: np.ndarray[Any, Any] = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return similarity


def unit(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    normed: np.ndarray[Any, Any] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normed


def strings(name: str, values: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(values), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[v] for v in values], dtype=object))
    return tensor


@pytest.fixture(scope="module")
def project(tiny_bert: Path, tiny_clip_vision: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = {
        "clipv": CLIP_VISION_YAML.format(name="clipv", path=tiny_clip_vision),
        "tiny": TINY_YAML.format(path=tiny_bert),
        "vlm": VLM_YAML + INDEX.format(role="text", corpus="corpus.txt"),
    }
    root = copy_project(tmp_path_factory.mktemp("vlm"), models)
    (root / "models/corpus.txt").write_text("\n".join(CORPUS) + "\n")
    result = run_doit(root, "build:vlm", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    members = {f"{stage}:{m}" for m in ("clipv", "tiny") for stage in ("fetch", "export", "engine", "config")}
    assert result.executed == members | {"index:vlm", "config:vlm", "repo:vlm"}
    return root


def test_repository_holds_every_member_with_artifacts_hardlinked(project: Path) -> None:
    repo = project / "repos/vlm"
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == [
        "clipv", "clipv_encoder", "clipv_preprocess", "tiny", "tiny_encoder", "tiny_tokenizer", "vlm", "vlm_search",
    ]  # fmt: skip
    # What built each member's engine travels with the repository (cpu: the onnxruntime version).
    assert sorted(json.loads((repo / "toolchain.json").read_text())["engines"]) == ["clipv", "tiny"]
    index = repo / "vlm_search/1/embeddings.npy"
    assert index.stat().st_ino == (project / "build/vlm/index/cpu/embeddings.npy").stat().st_ino
    assert not (project / "repos/clipv").exists()  # the members' own repositories were never needed
    for member in ("clipv", "tiny"):
        onnx = repo / f"{member}_encoder/1/model.onnx"
        assert onnx.stat().st_ino == (project / f"build/{member}/engine/cpu/model.onnx").stat().st_ino
    # A file users edit is a copy: editing it in repos/ leaves build/ (and the checkpoint) as they were.
    preprocessor = repo / "clipv_preprocess/1/preprocessor_config.json"
    fetched = project / "build/clipv/fetch/preprocessor_config.json"
    assert preprocessor.read_bytes() == fetched.read_bytes()
    assert preprocessor.stat().st_ino != fetched.stat().st_ino


def test_served_alone_vlm_returns_what_was_sent_and_matches_pytorch(project: Path, tiny_clip_vision: Path) -> None:
    images = generated_images()
    expected = pytorch_image_embeds(tiny_clip_vision, images)
    with TritonServer(project / "repos/vlm", "cpu", project / "build/test-triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            both = client.infer("vlm", [strings("image", images), strings("text", [t.encode() for t in TEXTS])])
            only_text = client.infer("vlm", [strings("text", [t.encode() for t in TEXTS])])
            only_image = client.infer("vlm", [strings("image", images[:1])])
            member = client.infer("tiny", [strings("text", [t.encode() for t in TEXTS])]).as_numpy("embedding")
            with pytest.raises(InferenceServerException, match=r"clipv: .*image: not a readable image"):
                client.infer("vlm", [strings("image", [b"these bytes are not an image"])])
            after_error = client.infer("clipv", [strings("image", images)]).as_numpy("embedding")
        finally:
            client.close()
    image_embedding = both.as_numpy("image_embedding")
    assert image_embedding.shape == (3, 24)
    assert cosine(image_embedding, expected).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(image_embedding, axis=1), 1.0, rtol=1e-5)  # export.normalize: true
    np.testing.assert_array_equal(both.as_numpy("text_embedding"), member)
    assert member.shape == (3, 32)
    assert only_text.as_numpy("image_embedding") is None
    np.testing.assert_array_equal(only_text.as_numpy("text_embedding"), member)
    assert only_image.as_numpy("text_embedding") is None
    assert cosine(only_image.as_numpy("image_embedding"), expected[:1]).min() >= 0.9999
    assert cosine(after_error, expected).min() >= 0.9999  # a bad request does not stop the server


def test_search_returns_the_exact_top_k_of_the_corpus(project: Path) -> None:
    queries = [CORPUS[3], CORPUS[6], "a horse and a man"]
    with TritonServer(project / "repos/vlm", "cpu", project / "build/test-triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            found = client.infer("vlm_search", [strings("text", [q.encode() for q in queries])])
            top_one = grpcclient.InferInput("top_k", [3, 1], "INT32")
            top_one.set_data_from_numpy(np.ones((3, 1), dtype=np.int32))
            best = client.infer("vlm_search", [strings("text", [q.encode() for q in queries]), top_one])
            corpus = client.infer("tiny", [strings("text", [c.encode() for c in CORPUS])]).as_numpy("embedding")
            embedded = client.infer("tiny", [strings("text", [q.encode() for q in queries])]).as_numpy("embedding")
            top_one.set_data_from_numpy(np.full((3, 1), 8, dtype=np.int32))
            with pytest.raises(InferenceServerException, match=r"top_k: expected 1\.\.7 \(the corpus size\), got 8"):
                client.infer("vlm_search", [strings("text", [q.encode() for q in queries]), top_one])
        finally:
            client.close()
    scores = unit(embedded) @ unit(corpus).T
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(found.as_numpy("ids"), expected)
    np.testing.assert_allclose(found.as_numpy("scores"), np.take_along_axis(scores, expected, axis=1), atol=1e-5)
    assert [[m.decode() for m in row] for row in found.as_numpy("matches")] == [[CORPUS[i] for i in row] for row in expected]
    assert found.as_numpy("ids")[:2, 0].tolist() == [3, 6]  # a corpus sentence finds itself first
    assert found.as_numpy("scores")[:2, 0] == pytest.approx([1.0, 1.0], abs=1e-5)
    np.testing.assert_array_equal(best.as_numpy("ids"), expected[:, :1])


def test_corpus_and_top_k_edits_rebuild_only_what_reads_them(project: Path) -> None:
    corpus = project / "models/corpus.txt"
    corpus.write_text(corpus.read_text() + "a cat sleeps on the sofa\n")
    result = run_doit(project, "build:vlm", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.executed == {"index:vlm", "repo:vlm"}
    edit(project / "models/vlm.yaml", "top_k: 3", "top_k: 2")
    result = run_doit(project, "build:vlm", "target=cpu")
    assert result.executed == {"config:vlm", "repo:vlm"}
    assert 'string_value: "2"' in (project / "repos/vlm/vlm_search/config.pbtxt").read_text()


def test_member_engine_edit_with_identical_bytes_stops_before_the_ensemble(project: Path) -> None:
    # A key only trtexec reads: nothing runs on cpu.
    edit(project / "models/clipv.yaml", "opt_batch_size: 4", "opt_batch_size: 2")
    result = run_doit(project, "build:vlm", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.executed == set()
    # On cpu the onnxruntime model does not depend on batch limits: engine re-runs, its bytes do not change.
    edit(project / "models/clipv.yaml", "engine:\n  max_batch_size: 8", "engine:\n  max_batch_size: 16")
    result = run_doit(project, "build:vlm", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.executed == {"engine:clipv"}


CAPTIONS = ["a photo of a cat", "a drawing of a red car", "two birds over the sea and a bowl of fruit"]


def pytorch_text_embeds(checkpoint: Path, texts: list[str]) -> np.ndarray[Any, Any]:
    import torch
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = CLIPTextModelWithProjection.from_pretrained(checkpoint).eval()  # type: ignore[no-untyped-call]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        embeds: np.ndarray[Any, Any] = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).text_embeds.numpy()
    return embeds


def test_clip_text_is_a_one_file_member_for_cross_modal_search(
    tiny_clip_vision: Path, tiny_clip_text: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    models = {
        "clipv": CLIP_VISION_YAML.format(name="clipv", path=tiny_clip_vision),
        "clipt": CLIP_TEXT_YAML.format(name="clipt", path=tiny_clip_text),
        "search": VLM_YAML.replace("name: vlm", "name: search").replace("text: tiny", "text: clipt")
        + INDEX.format(role="image", corpus="photos/list.txt"),
    }
    root = copy_project(tmp_path_factory.mktemp("clip-search"), models)
    images = generated_images()
    (root / "models/photos").mkdir()
    for number, image in enumerate(images):
        (root / f"models/photos/{number}.img").write_bytes(image)
    (root / "models/photos/list.txt").write_text("0.img\n1.img\n2.img\n")
    result = run_doit(root, "build:search", "target=cpu")
    assert result.rc == 0, result.stdout + result.stderr
    with TritonServer(root / "repos/search", "cpu", root / "build/test-triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            inputs = [strings("image", images), strings("text", [c.encode() for c in CAPTIONS])]
            reply = client.infer("search", inputs)
            found = client.infer("search_search", [strings("image", images[::-1])])
        finally:
            client.close()
    # An image index: each photo finds itself first.
    assert found.as_numpy("ids")[:, 0].tolist() == [2, 1, 0]
    assert [row[0].decode() for row in found.as_numpy("matches")] == ["2.img", "1.img", "0.img"]
    # A photo's bytes are an input of the index: replacing one rebuilds the index and the repository only.
    (root / "models/photos/1.img").write_bytes(images[0])
    assert run_doit(root, "build:search", "target=cpu").executed == {"index:search", "repo:search"}
    image, text = reply.as_numpy("image_embedding"), reply.as_numpy("text_embedding")
    expected_text = pytorch_text_embeds(tiny_clip_text, CAPTIONS)
    assert text.shape == (3, 24)
    assert cosine(text, expected_text).min() >= 0.9999
    # Both towers project into one space: the image x caption similarity matrix is PyTorch's.
    expected_image = pytorch_image_embeds(tiny_clip_vision, images)
    np.testing.assert_allclose(image @ text.T, unit(expected_image) @ unit(expected_text).T, atol=1e-4)
