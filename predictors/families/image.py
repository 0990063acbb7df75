"""Image family: CNN classifiers on FP32 ``[-1, C, H, W]`` tensors or encoded PNG/JPEG images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from predictors.base import MaasModel
from predictors.classifier import ClassifierOutputs
from predictors.config import ImagePreprocessing, TensorSpec
from predictors.errors import ConfigError, InvalidRequest
from predictors.images import check_channels, decode_images, v1_images
from predictors.inputs import check_tensor, reject_unknown, v2_input
from predictors.v2 import V2Request

IMAGE_INPUT = "image"
IMAGE_SPEC = TensorSpec(name=IMAGE_INPUT, datatype="BYTES", shape=[-1], optional=True)


def in_layout(value: Any, memory_format: str) -> Any:
    """A module or a 4-D tensor in ``memory_format`` (``channels_last`` or ``contiguous``)."""
    import torch

    layout = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    if isinstance(value, torch.nn.Module):
        return value.to(memory_format=layout)  # type: ignore[call-overload]  # documented; not in the stubs
    return value.contiguous(memory_format=layout)


def runnable(
    module: Any, options: ImagePreprocessing, shape: tuple[int, int, int], model_dir: Path, threads: int
) -> tuple[Any, str | None]:
    """The module as the image family runs it (on torch in its memory format, or as a checked ONNX
    Runtime session), and the memory format of its torch input batches (None: numpy batches as
    they come, for ONNX Runtime)."""
    if options.runtime == "onnxruntime":
        from predictors.families.image_onnx import onnx_classifier

        return onnx_classifier(module, shape, model_dir, threads), None
    return in_layout(module, options.memory_format), options.memory_format


class ImageModel(ClassifierOutputs, MaasModel[np.ndarray]):
    """Serves any torch image classifier whose forward maps ``[N, C, H, W]`` to logits."""

    def build(self) -> None:
        spec = self.tensor_spec
        if spec.datatype != "FP32" or len(spec.shape) != 4 or spec.shape[0] != -1 or -1 in spec.shape[1:]:
            raise ConfigError(f"an image model's input must be FP32 [-1, C, H, W], got {spec.datatype} {spec.shape}")
        check_channels(self.config.image, spec.shape[1])
        if self.config.image.runtime == "onnxruntime" and self.device.type != "cpu":
            raise ConfigError("image.runtime onnxruntime runs on the CPU: pass --device cpu or use runtime torch")
        self.module, self.layout = runnable(
            self.build_torch_module(), self.config.image, self.image_shape, self.model_dir, self.threads
        )

    @property
    def tensor_spec(self) -> TensorSpec:
        return self.first_input("[-1, C, H, W]")

    def input_specs(self) -> list[TensorSpec]:
        return [self.tensor_spec, IMAGE_SPEC]

    def prepare_v2(self, request: V2Request) -> tuple[np.ndarray, int]:
        spec = self.tensor_spec
        reject_unknown(request, [spec.name, IMAGE_INPUT])
        if (spec.name in request.inputs) == (IMAGE_INPUT in request.inputs):
            raise InvalidRequest(f"send exactly one of input '{spec.name}' (FP32 tensor) or '{IMAGE_INPUT}' (BYTES)")
        if spec.name in request.inputs:
            array = v2_input(request, spec)
        else:
            images = check_tensor(IMAGE_SPEC, request.inputs[IMAGE_INPUT], request.datatypes[IMAGE_INPUT])
            array = decode_images(images, self.image_shape, self.config.image)
        return array, len(array)

    def prepare_v1(self, instances: list[Any], parameters: dict[str, Any]) -> tuple[np.ndarray, int]:
        array = v1_images(instances, self.image_shape, self.config.image)
        check_tensor(self.tensor_spec, array, "FP32")
        return array, len(array)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.tensor_spec.shape
        return c, h, w

    def split(self, part: np.ndarray, rows: int) -> list[np.ndarray]:
        return [part[start : start + rows] for start in range(0, len(part), rows)]

    def collate(self, parts: Sequence[np.ndarray]) -> Any:
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return batch if self.layout is None else in_layout(self.tensor(batch), self.layout)

    def run(self, batch: Any) -> dict[str, np.ndarray]:
        return {"probabilities": self.probabilities(self.module(batch))}

    def warmup_parts(self) -> list[np.ndarray]:
        _, c, h, w = self.tensor_spec.shape
        return [np.zeros((1, c, h, w), dtype=np.float32)] * self.settings.max_batch_size
