"""Encoded images (PNG/JPEG) to model tensors and back, for every family that takes or gives images.

Decoding follows a model's ``ImagePreprocessing``: convert to its colour mode, resize to its
``[H, W]``, then ``(pixel * scale - mean) / std``, as a ``[C, H, W]`` float32 array.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

from predictors.config import ImagePreprocessing
from predictors.errors import ConfigError, InvalidRequest
from predictors.inputs import float_instances

MAX_IMAGE_PIXELS = 50_000_000
_SIGNATURES = (b"\x89PNG", b"\xff\xd8")  # PNG, JPEG


def check_channels(prep: ImagePreprocessing, channels: int) -> None:
    """The colour mode encoded images are converted to must give the model's channels."""
    if channels != {"L": 1, "RGB": 3}[prep.color_mode]:
        raise ConfigError(f"image.color_mode {prep.color_mode} does not give {channels} channels")


def b64decode(text: str, index: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"image {index}: 'b64' is not valid base64") from None


def decode_image(
    raw: bytes, index: int, shape: tuple[int, int, int], prep: ImagePreprocessing, allow_base64: bool = False
) -> np.ndarray:
    """PNG/JPEG bytes (or their base64 text, when allowed) to a normalised ``[C, H, W]`` float32 array."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    _, h, w = shape
    if allow_base64 and not raw.startswith(_SIGNATURES):
        raw = b64decode(raw.decode("ascii", "replace"), index)
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            if opened.format not in ("PNG", "JPEG"):
                raise InvalidRequest(f"image {index}: format {opened.format} is not supported; send PNG or JPEG")
            opened.draft(prep.color_mode, (w, h))
            img = opened.convert(prep.color_mode)
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling[prep.resample.upper()])
            pixels = np.asarray(img, dtype=np.float32)
    except InvalidRequest:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(f"image {index}: not a decodable PNG or JPEG image ({exc})") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    mean, std = np.asarray(prep.mean, dtype=np.float32), np.asarray(prep.std, dtype=np.float32)
    pixels = (pixels * prep.scale - mean) / std
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


def decode_images(encoded: np.ndarray, shape: tuple[int, int, int], prep: ImagePreprocessing) -> np.ndarray:
    """A V2 BYTES tensor of encoded images (raw or base64) as a ``[N, C, H, W]`` batch."""
    return np.stack([decode_image(raw, i, shape, prep, allow_base64=True) for i, raw in enumerate(encoded)])


def v1_images(instances: list[Any], shape: tuple[int, int, int], prep: ImagePreprocessing) -> np.ndarray:
    """V1 instances as a ``[N, C, H, W]`` batch: ``[C][H][W]`` lists (``[H][W]`` for one channel),
    ``{"image": {"b64": ...}}`` or ``{"b64": ...}``."""
    c, h, w = shape
    if all(isinstance(x, list) for x in instances):
        nested = (len(instances), c, h, w) if c != 1 or _depth(instances[0]) == 3 else (len(instances), h, w)
        return float_instances("instances", instances, nested).reshape(len(instances), c, h, w)
    return np.stack([_v1_image(x, i, shape, prep) for i, x in enumerate(instances)])


def _v1_image(instance: Any, index: int, shape: tuple[int, int, int], prep: ImagePreprocessing) -> np.ndarray:
    if isinstance(instance, dict):
        encoded = instance.get("image", instance)
        if isinstance(encoded, dict) and isinstance(encoded.get("b64"), str):
            return decode_image(b64decode(encoded["b64"], index), index, shape, prep)
    if isinstance(instance, list):
        return float_instances(f"instances[{index}]", [instance], (1, *shape))[0]
    raise InvalidRequest(f'instances[{index}]: expected a [C][H][W] list or {{"image": {{"b64": "..."}}}}')


def encode_png(image: np.ndarray) -> bytes:
    """A ``[C, H, W]`` image in [0, 1] (one or three channels) as PNG bytes."""
    from PIL import Image

    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB"}[pixels.shape[0]]
    buffer = io.BytesIO()
    Image.fromarray(pixels[0] if mode == "L" else pixels.transpose(1, 2, 0), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth
