"""Image family: CNN classifiers on FP32 ``[-1, C, H, W]`` tensors or encoded PNG/JPEG images."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from predictors.base import MaasModel
from predictors.classifier import ClassifierOutputs
from predictors.config import TensorSpec
from predictors.errors import ConfigError, InvalidRequest
from predictors.inputs import check_tensor, float_instances, reject_unknown, v2_input
from predictors.modules import build_module
from predictors.v2 import V2Request

IMAGE_INPUT = "image"
MAX_IMAGE_PIXELS = 50_000_000


class ImageModel(ClassifierOutputs, MaasModel[np.ndarray]):
    """Serves any torch image classifier whose forward maps ``[N, C, H, W]`` to logits."""

    def build(self) -> None:
        if self.config.module is None:
            raise ConfigError("an image model config needs a 'module' section")
        spec = self.tensor_spec
        if spec.datatype != "FP32" or len(spec.shape) != 4 or spec.shape[0] != -1 or -1 in spec.shape[1:]:
            raise ConfigError(f"an image model's input must be FP32 [-1, C, H, W], got {spec.datatype} {spec.shape}")
        channels = spec.shape[1]
        if channels != {"L": 1, "RGB": 3}[self.config.image.color_mode]:
            raise ConfigError(f"image.color_mode {self.config.image.color_mode} does not give {channels} channels")
        self.module = build_module(self.config.module, self.model_dir, self.device, self.dtype)
        self._mean = np.asarray(self.config.image.mean, dtype=np.float32)
        self._std = np.asarray(self.config.image.std, dtype=np.float32)

    @property
    def tensor_spec(self) -> TensorSpec:
        if not self.config.inputs:
            raise ConfigError("an image model config needs 'inputs' with its [-1, C, H, W] tensor")
        return self.config.inputs[0]

    def input_specs(self) -> list[TensorSpec]:
        return [self.tensor_spec, TensorSpec(name=IMAGE_INPUT, datatype="BYTES", shape=[-1], optional=True)]

    def prepare_v2(self, request: V2Request) -> tuple[np.ndarray, int]:
        spec = self.tensor_spec
        reject_unknown(request, [spec.name, IMAGE_INPUT])
        if (spec.name in request.inputs) == (IMAGE_INPUT in request.inputs):
            raise InvalidRequest(f"send exactly one of input '{spec.name}' (FP32 tensor) or '{IMAGE_INPUT}' (BYTES)")
        if spec.name in request.inputs:
            array = v2_input(request, spec)
        else:
            images = check_tensor(self.input_specs()[1], request.inputs[IMAGE_INPUT], request.datatypes[IMAGE_INPUT])
            array = np.stack([self.decode_image(raw, i, allow_base64=True) for i, raw in enumerate(images)])
        return array, len(array)

    def prepare_v1(self, instances: list[Any], parameters: dict[str, Any]) -> tuple[np.ndarray, int]:
        _, c, h, w = self.tensor_spec.shape
        if all(isinstance(x, list) for x in instances):
            shape = (len(instances), c, h, w) if c != 1 or _depth(instances[0]) == 3 else (len(instances), h, w)
            array = float_instances("instances", instances, shape).reshape(len(instances), c, h, w)
        else:
            array = np.stack([self._v1_instance(x, i) for i, x in enumerate(instances)])
        check_tensor(self.tensor_spec, array, "FP32")
        return array, len(array)

    def _v1_instance(self, instance: Any, index: int) -> np.ndarray:
        if isinstance(instance, dict):
            encoded = instance.get("image", instance)
            if isinstance(encoded, dict) and isinstance(encoded.get("b64"), str):
                return self.decode_image(_b64(encoded["b64"], index), index)
        if isinstance(instance, list):
            _, c, h, w = self.tensor_spec.shape
            return float_instances(f"instances[{index}]", [instance], (1, c, h, w))[0]
        raise InvalidRequest(f'instances[{index}]: expected a [C][H][W] list or {{"image": {{"b64": "..."}}}}')

    def decode_image(self, raw: bytes, index: int, allow_base64: bool = False) -> np.ndarray:
        """PNG/JPEG bytes to a normalised ``[C, H, W]`` float32 array at the model's size."""
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        _, _, h, w = self.tensor_spec.shape
        prep = self.config.image
        if allow_base64 and not raw.startswith((b"\x89PNG", b"\xff\xd8")):
            raw = _b64(raw.decode("ascii", "replace"), index)
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
        pixels = (pixels * prep.scale - self._mean) / self._std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)

    def collate(self, parts: Sequence[np.ndarray]) -> Any:
        return self.tensor(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def run(self, batch: Any) -> dict[str, np.ndarray]:
        return {"probabilities": self.probabilities(self.module(batch))}

    def warmup_parts(self) -> list[np.ndarray]:
        _, c, h, w = self.tensor_spec.shape
        return [np.zeros((1, c, h, w), dtype=np.float32)] * self.settings.max_batch_size


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth


def _b64(text: str, index: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"image {index}: 'b64' is not valid base64") from None
