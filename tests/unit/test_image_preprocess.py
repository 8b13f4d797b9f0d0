"""The image preprocessing python model in process: pixel values equal transformers' CLIP image processor."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.support.images import IMAGES, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, load_model_module


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
