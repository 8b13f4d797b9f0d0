"""The image preprocessing python model: equal to transformers' CLIP image processor, served by the real Triton."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

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


def reference(folder: Path, data: bytes) -> np.ndarray[Any, Any]:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil.from_pretrained(folder)
    out = processor(images=Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"][0]
    return np.asarray(out)


def test_pixel_values_equal_transformers(processor_dir: Path) -> None:
    model = load_model_module()
    settings = model.Settings.from_config(json.loads((processor_dir / "preprocessor_config.json").read_text()))
    for data in IMAGES:
        ours = model.preprocess(data, settings)
        theirs = reference(processor_dir, data)
        assert ours.shape == theirs.shape == (3, 28, 30)
        assert ours.dtype == np.float32
        assert float(np.abs(ours - theirs).max()) <= 1e-5


def test_legacy_integer_sizes_and_exact_resize() -> None:
    model = load_model_module()
    legacy = {"size": 32, "crop_size": 32, "do_center_crop": True, "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD}
    settings = model.Settings.from_config(legacy)
    assert (settings.shortest_edge, settings.crop) == (32, (32, 32))
    exact = model.Settings.from_config({"size": {"height": 20, "width": 24}, "do_normalize": False})
    assert model.preprocess(IMAGES[0], exact).shape == (3, 20, 24)
    with pytest.raises(model.ConfigError, match="size"):
        model.Settings.from_config({"size": {"longest_edge": 32}, "image_mean": [0, 0, 0], "image_std": [1, 1, 1]})


def test_bytes_that_are_not_an_image() -> None:
    model = load_model_module()
    settings = model.Settings.from_config({"size": 32, "do_normalize": False})
    with pytest.raises(ValueError, match="not a readable image"):
        model.preprocess(b"\x89PNG but not really", settings)
