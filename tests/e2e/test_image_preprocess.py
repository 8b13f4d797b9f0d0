"""The image preprocessing python model: equal to transformers' CLIP image processor, served by the real Triton."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from tasks.stages import config
from tasks.triton.launcher import TritonServer
from tasks.triton.repository import TEMPLATES

TEMPLATE = TEMPLATES / "image" / "preprocess"
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def load_model_module() -> types.ModuleType:
    """The template's model.py imported outside Triton (its backend utils module replaced by a stand-in)."""
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("image_preprocess_model", TEMPLATE / "1" / "model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def encoded(size: tuple[int, int], fmt: str, mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


IMAGES = [
    encoded((50, 37), "PNG", seed=1),
    encoded((64, 64), "JPEG", seed=2),
    encoded((23, 80), "PNG", mode="RGBA", seed=3),
    encoded((40, 30), "PNG", mode="L", seed=4),
]


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("clip-preprocessor")
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 28, "width": 30}, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD
    )
    processor.save_pretrained(folder)
    return folder


def test_served_by_triton_with_per_request_errors(processor_dir: Path, tmp_path: Path) -> None:
    model = load_model_module()
    settings = model.Settings.from_config(json.loads((processor_dir / "preprocessor_config.json").read_text()))
    repo = tmp_path / "repo" / "images"
    (repo / "1").mkdir(parents=True)
    values = {"preprocess_model": "images", "max_batch_size": 4, "instance_count": 1, "crop_height": 28, "crop_width": 30}
    text = config.fill(TEMPLATE / "config.pbtxt", values)
    config.parse(text, TEMPLATE / "config.pbtxt")
    (repo / "config.pbtxt").write_text(text)
    shutil.copy(TEMPLATE / "1" / "model.py", repo / "1" / "model.py")
    shutil.copy(processor_dir / "preprocessor_config.json", repo / "1" / "preprocessor_config.json")

    def infer(client: grpcclient.InferenceServerClient, items: list[bytes]) -> np.ndarray[Any, Any]:
        tensor = grpcclient.InferInput("image", [len(items), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[item] for item in items], dtype=np.object_))
        result: np.ndarray[Any, Any] | None = client.infer("images", [tensor]).as_numpy("pixel_values")
        assert result is not None
        return result

    with TritonServer(repo.parent, "cpu", tmp_path / "triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            got = infer(client, IMAGES[:2])
            with pytest.raises(InferenceServerException, match="not a readable image"):
                infer(client, [b"definitely not an image"])
            again = infer(client, IMAGES[2:])  # the server keeps serving
        finally:
            client.close()
    assert got.shape == (2, 3, 28, 30)
    for i, data in enumerate(IMAGES[:2]):
        assert np.array_equal(got[i], model.preprocess(data, settings))
    assert again.shape == (2, 3, 28, 30)
