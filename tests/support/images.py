"""The image preprocessing template's model.py loaded outside Triton, and encoded test images for it."""

from __future__ import annotations

import importlib.util
import io
import sys
import types
from pathlib import Path

import numpy as np
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


def save_clip_processor(folder: Path) -> Path:
    """A CLIP image processor config (shortest edge 32, crop 28 x 30, OpenAI mean/std) saved in ``folder``."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 28, "width": 30}, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD
    )
    processor.save_pretrained(folder)
    return folder
