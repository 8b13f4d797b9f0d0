"""Triton python model: encoded image bytes -> the vision encoder's ``pixel_values``.

The steps and their constants come from the checkpoint's ``preprocessor_config.json`` (in
this model's version directory), applied in the order Hugging Face image processors use:
convert to RGB (transparency over white), resize (shortest edge, aspect kept, or an exact height x width) with the
configured PIL filter, centre crop, multiply by the rescale factor, normalise with the
per-channel mean and std; channels first, float32.  Only Pillow and numpy are needed.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
from PIL import Image, UnidentifiedImageError

# PIL's resampling filters by the integer code Hugging Face configs store.
_FILTERS = {
    0: Image.Resampling.NEAREST,
    1: Image.Resampling.LANCZOS,
    2: Image.Resampling.BILINEAR,
    3: Image.Resampling.BICUBIC,
    4: Image.Resampling.BOX,
    5: Image.Resampling.HAMMING,
}


class ConfigError(ValueError):
    """The preprocessor config asks for something this model does not do."""


def _size(value: Any, name: str) -> dict[str, int]:  # noqa: ANN401 - raw JSON
    # Older configs store a bare int; newer ones a dict.
    if isinstance(value, int):
        return {"shortest_edge": value} if name == "size" else {"height": value, "width": value}
    if isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
        return {str(k): int(v) for k, v in value.items()}
    raise ConfigError(f"preprocessor_config.json: {name}: expected an integer or a size mapping, got {value!r}")


@dataclass(frozen=True)
class Settings:
    shortest_edge: int | None
    resize_to: tuple[int, int] | None  # (height, width)
    resample: Image.Resampling
    crop: tuple[int, int] | None  # (height, width)
    rescale_factor: float | None
    mean: np.ndarray | None
    std: np.ndarray | None
    convert_rgb: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Settings:
        shortest, exact = None, None
        if config.get("do_resize", True):
            size = _size(config.get("size"), "size")
            if set(size) == {"shortest_edge"}:
                shortest = size["shortest_edge"]
            elif set(size) == {"height", "width"}:
                exact = (size["height"], size["width"])
            else:
                raise ConfigError(f"preprocessor_config.json: size: {size} is not supported (shortest_edge, or height and width)")
        crop = None
        if config.get("do_center_crop", False):
            crop_size = _size(config.get("crop_size"), "crop_size")
            crop = (crop_size["height"], crop_size["width"])
        resample = int(config.get("resample", 3))
        if resample not in _FILTERS:
            raise ConfigError(f"preprocessor_config.json: resample: unknown PIL filter {resample}")
        normalize = bool(config.get("do_normalize", True))
        return cls(
            shortest_edge=shortest,
            resize_to=exact,
            resample=_FILTERS[resample],
            crop=crop,
            rescale_factor=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else None,
            mean=np.asarray(config["image_mean"], dtype=np.float32) if normalize else None,
            std=np.asarray(config["image_std"], dtype=np.float32) if normalize else None,
            convert_rgb=bool(config.get("do_convert_rgb", True)),
        )

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every output, when the config fixes it."""
        return self.crop or self.resize_to


def _resized_size(height: int, width: int, settings: Settings) -> tuple[int, int]:
    if settings.resize_to is not None:
        return settings.resize_to
    if settings.shortest_edge is None:
        return height, width
    short, long = sorted((height, width))
    new_short, new_long = settings.shortest_edge, int(settings.shortest_edge * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def _center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    rows, cols = array.shape[:2]
    if height > rows or width > cols:
        # Pad with zeros around the image first, as Hugging Face's center_crop does.
        padded = np.zeros((max(rows, height), max(cols, width), *array.shape[2:]), dtype=array.dtype)
        top, left = (padded.shape[0] - rows + 1) // 2, (padded.shape[1] - cols + 1) // 2
        padded[top : top + rows, left : left + cols] = array
        array, rows, cols = padded, padded.shape[0], padded.shape[1]
    top, left = (rows - height) // 2, (cols - width) // 2
    return array[top : top + height, left : left + width]


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent pixels become white, as Hugging Face image processors composite them.
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(data: bytes, settings: Settings) -> np.ndarray:
    """One encoded image -> float32 [3, H, W]; raises ValueError for bytes that are not an image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a readable image: {exc}") from None
    if settings.convert_rgb:
        image = _to_rgb(image)
    height, width = _resized_size(image.height, image.width, settings)
    if (height, width) != (image.height, image.width):
        image = image.resize((width, height), resample=settings.resample)
    array = np.asarray(image)
    if array.ndim == 2:  # noqa: PLR2004 - greyscale kept as is
        array = array[:, :, None]
    if settings.crop is not None:
        array = _center_crop(array, *settings.crop)
    pixels = array.astype(np.float64) * settings.rescale_factor if settings.rescale_factor is not None else array
    pixels = pixels.astype(np.float32)
    if settings.mean is not None and settings.std is not None:
        pixels = (pixels - settings.mean) / settings.std
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        config = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        self.settings = Settings.from_config(config)

    def _one(self, request: Any) -> Any:  # noqa: ANN401 - pb_utils objects are untyped
        raw = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
        try:
            batch = np.stack([preprocess(bytes(item), self.settings) for item in raw])
        except ValueError as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"image: {exc}"))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("pixel_values", batch)])

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]
