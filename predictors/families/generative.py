"""Generative family: images from a VAE decoder or a GAN generator (torch), and a VAE's encoder.

``maas.yaml`` names the module (``module``: class, kwargs, weights) and describes it under
``generative``: ``kind`` (vae | gan), ``latent_dim`` Z, ``image_shape`` [C, H, W], ``output_range``
(what the module's pixels span, mapped onto [0, 1]; a tanh GAN says [-1, 1]) and ``max_samples``.
A GAN module maps ``[N, Z]`` latents to images with ``forward``; a VAE module has ``decode(z)`` and
``encode(x) -> (mean, log_variance)``.

The request parameter ``mode`` picks what to do (a GAN only generates):

- ``generate`` (the default): from latents, V2 input ``latent`` FP32 ``[-1, Z]`` or V1
  ``{"instances": [[z, ...], ...]}``; or from parameters ``num_samples`` (1 to ``max_samples``) and
  ``seed`` (0 to 2**63 - 1, random when absent) with no inputs at all: V1
  ``{"parameters": {"num_samples": 4, "seed": 1}}`` (``instances`` absent or empty), V2
  ``{"inputs": [], "parameters": {...}}``. The latents of a seed are ``seeded_latents(seed, n, Z)``,
  so a seed always gives the same images.
- ``reconstruct`` (the default when images are sent) and ``encode`` (VAE only): images as V2 input
  ``image`` FP32 ``[-1, C, H, W]`` (in the model's input range) or ``png`` BYTES ``[-1]`` (PNG/JPEG,
  raw or base64, converted as ``image:`` in ``maas.yaml`` says), V1 ``[C][H][W]`` lists or
  ``{"b64": ...}``. ``reconstruct`` decodes the posterior mean; ``encode`` answers ``latent`` (the
  mean) and ``log_variance`` FP32 ``[-1, Z]``.

Images come back as ``image`` FP32 ``[-1, C, H, W]`` in [0, 1]. With parameter ``png: true`` (or a
V2 request asking for output ``png``) they also come as PNG bytes, ``png`` BYTES ``[-1]``; V1 then
answers ``{"png": {"b64": ...}}`` per image instead of the pixel lists. Only requests of the same
mode share a forward pass.
"""

from __future__ import annotations

import base64
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictors.base import Job, MaasModel
from predictors.config import GenerativeOptions, TensorSpec
from predictors.errors import ConfigError, InvalidRequest
from predictors.images import check_channels, decode_images, encode_png, v1_images
from predictors.inputs import (
    bool_parameter,
    check_tensor,
    float_instances,
    int_parameter,
    reject_unknown,
    seed_parameter,
    v2_input,
)
from predictors.v2 import V2Request

MODES = ("generate", "encode", "reconstruct")
LATENT, IMAGE, PNG = "latent", "image", "png"


def seeded_latents(seed: int, count: int, latent_dim: int) -> np.ndarray:
    """The standard-normal latents a seed stands for: ``[count, latent_dim]`` float32."""
    return np.random.default_rng(seed).standard_normal((count, latent_dim), dtype=np.float32)


@dataclass
class GenerativePart:
    """One request: latents to decode (generate) or images to encode (encode, reconstruct)."""

    mode: str
    array: np.ndarray


class GenerativeModel(MaasModel[GenerativePart]):
    """Serves a VAE or a GAN generator described by the model config's ``generative`` section."""

    @property
    def options(self) -> GenerativeOptions:
        if self.config.generative is None:
            raise ConfigError("a generative model config needs a 'generative' section")
        return self.config.generative

    @property
    def is_vae(self) -> bool:
        return self.options.kind == "vae"

    def build(self) -> None:
        import torch

        options = self.options
        if self.is_vae:
            check_channels(self.config.image, options.image_shape[0])
        self.module = self.build_torch_module()
        missing = [m for m in ("encode", "decode") if self.is_vae and not callable(getattr(self.module, m, None))]
        if missing:
            raise ConfigError(f"a VAE module needs encode() and decode(); {type(self.module).__name__} lacks {missing}")
        with torch.inference_mode():
            made = self._decode(self.tensor(np.zeros((1, options.latent_dim), dtype=np.float32)))
        if list(made.shape[1:]) != options.image_shape:
            raise ConfigError(
                f"the module makes images of shape {list(made.shape[1:])}; the config says {options.image_shape}"
            )

    # ---- specs and parameters -----------------------------------------------------------
    @property
    def latent_spec(self) -> TensorSpec:
        return TensorSpec(name=LATENT, datatype="FP32", shape=[-1, self.options.latent_dim], optional=True)

    @property
    def image_spec(self) -> TensorSpec:
        return TensorSpec(name=IMAGE, datatype="FP32", shape=[-1, *self.options.image_shape], optional=True)

    @property
    def png_spec(self) -> TensorSpec:
        return TensorSpec(name=PNG, datatype="BYTES", shape=[-1], optional=True)

    def input_specs(self) -> list[TensorSpec]:
        return [self.latent_spec, self.image_spec, self.png_spec] if self.is_vae else [self.latent_spec]

    def output_specs(self) -> list[TensorSpec]:
        specs = [self.image_spec.model_copy(update={"optional": False}), self.png_spec]
        if self.is_vae:
            specs += [self.latent_spec, self.latent_spec.model_copy(update={"name": "log_variance"})]
        return specs

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        mode = parameters.get("mode", "generate")
        if mode not in MODES:
            raise InvalidRequest(f"parameter 'mode' must be one of {list(MODES)}, got {mode!r}")
        if mode != "generate" and not self.is_vae:
            raise InvalidRequest(f"parameter 'mode': {mode!r} needs a VAE; this model is a GAN and only generates")
        int_parameter(parameters, "num_samples", 1, self.options.max_samples)
        seed_parameter(parameters)
        bool_parameter(parameters, "png")

    def accepts_empty(self, parameters: dict[str, Any]) -> bool:
        return "num_samples" in parameters

    def batch_key(self, job: Job[GenerativePart]) -> Hashable:
        return job.part.mode

    # ---- requests -----------------------------------------------------------------------
    def prepare_v2(self, request: V2Request) -> tuple[GenerativePart, int]:
        reject_unknown(request, [spec.name for spec in self.input_specs()])
        if request.requested and PNG in request.requested:
            request.parameters["png"] = True
        inputs = request.inputs
        mode = self._mode(request.parameters, images=IMAGE in inputs or PNG in inputs)
        if mode == "generate":
            latents = v2_input(request, self.latent_spec) if LATENT in inputs else None
            return self._generate(latents, request.parameters)
        if LATENT in inputs or (IMAGE in inputs) == (PNG in inputs):
            raise InvalidRequest(f"mode {mode!r} takes exactly one of input '{IMAGE}' (FP32 tensor) or '{PNG}' (BYTES)")
        if IMAGE in inputs:
            images = v2_input(request, self.image_spec)
        else:
            encoded = check_tensor(self.png_spec, inputs[PNG], request.datatypes[PNG])
            images = decode_images(encoded, self._shape, self.config.image)
        return GenerativePart(mode, images), len(images)

    def prepare_v1(self, instances: list[Any], parameters: dict[str, Any]) -> tuple[GenerativePart, int]:
        latents = all(isinstance(x, list) and not any(isinstance(v, (list, dict)) for v in x) for x in instances)
        mode = self._mode(parameters, images=bool(instances) and not latents)
        if mode == "generate":
            if not instances:
                return self._generate(None, parameters)
            array = float_instances("instances", instances, (len(instances), self.options.latent_dim))
            return self._generate(check_tensor(self.latent_spec, array, "FP32"), parameters)
        if not instances:
            raise InvalidRequest(f"mode {mode!r} needs images in 'instances'")
        images = check_tensor(self.image_spec, v1_images(instances, self._shape, self.config.image), "FP32")
        return GenerativePart(mode, images), len(images)

    @property
    def _shape(self) -> tuple[int, int, int]:
        c, h, w = self.options.image_shape
        return c, h, w

    def _mode(self, parameters: dict[str, Any], images: bool) -> str:
        mode = parameters.get("mode", "reconstruct" if images else "generate")
        if mode == "generate" and images:
            raise InvalidRequest(f"mode 'generate' takes input '{LATENT}' or parameter 'num_samples', not images")
        return mode

    def _generate(self, latents: np.ndarray | None, parameters: dict[str, Any]) -> tuple[GenerativePart, int]:
        count = parameters.get("num_samples")
        if latents is None:
            if count is None:
                raise InvalidRequest(f"send latents (input '{LATENT}') or parameter 'num_samples' (with 'seed')")
            latents = seeded_latents(seed_parameter(parameters), count, self.options.latent_dim)
        elif count is not None or "seed" in parameters:
            raise InvalidRequest("send either latents or parameters 'num_samples'/'seed', not both")
        return GenerativePart("generate", latents), len(latents)

    # ---- the model thread ---------------------------------------------------------------
    def collate(self, parts: Sequence[GenerativePart]) -> tuple[str, Any]:
        arrays = [p.array for p in parts]
        return parts[0].mode, self.tensor(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))

    def run(self, batch: tuple[str, Any]) -> dict[str, np.ndarray]:
        mode, x = batch
        if mode == "generate":
            return {IMAGE: self._pixels(self._decode(x))}
        mean, log_variance = self.module.encode(x)
        if mode == "encode":
            return {LATENT: _numpy(mean), "log_variance": _numpy(log_variance)}
        return {IMAGE: self._pixels(self.module.decode(mean))}

    def _decode(self, z: Any) -> Any:
        return self.module.decode(z) if self.is_vae else self.module(z)

    def _pixels(self, images: Any) -> np.ndarray:
        low, high = self.options.output_range
        return _numpy(((images.float() - low) / (high - low)).clamp(0.0, 1.0))

    def finish(self, outputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        if IMAGE in outputs and parameters.get("png"):
            encoded = np.empty(len(outputs[IMAGE]), dtype=object)
            encoded[:] = [encode_png(image) for image in outputs[IMAGE]]
            outputs = {**outputs, PNG: encoded}
        return outputs

    def format_v1(self, outputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> list[Any]:
        if LATENT in outputs:
            return [
                {LATENT: mean.tolist(), "log_variance": log_variance.tolist()}
                for mean, log_variance in zip(outputs[LATENT], outputs["log_variance"])
            ]
        if PNG in outputs:
            return [{PNG: {"b64": base64.b64encode(raw).decode("ascii")}} for raw in outputs[PNG]]
        return [{IMAGE: image.tolist()} for image in outputs[IMAGE]]

    def warmup_parts(self) -> list[GenerativePart]:
        latent = np.zeros((1, self.options.latent_dim), dtype=np.float32)
        return [GenerativePart("generate", latent)] * self.settings.max_batch_size


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.float().cpu().numpy()
