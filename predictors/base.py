"""The predictor base every family builds on: loading, warm-up, batching, protocols, metadata.

A family implements a few hooks (``build``, ``prepare_v1``, ``prepare_v2``, ``collate``, ``run``,
``format_v1`` and its specs); everything shared lives here, once. Request flow, the same for
V1 REST, V2 REST and V2 gRPC::

    preprocess: decode + validate (400 here never reaches a batch)
    predict:    AdaptiveBatcher -> collate -> run (model thread, inference_mode) -> split rows
    postprocess: encode for the protocol the request came in on
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from abc import abstractmethod
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from kserve import Model

from predictors import metrics
from predictors.batching import AdaptiveBatcher, Ticket
from predictors.config import ModelConfig, TensorSpec
from predictors.cpus import available_cores, default_threads
from predictors.errors import ConfigError, InvalidRequest, NotReady, UnsupportedMediaType
from predictors.settings import Device, DType, Settings
from predictors.tensors import Limits
from predictors.v2 import HEADER_LENGTH, V2Request, decode_binary, decode_grpc, decode_json, encode_grpc, encode_rest

logger = logging.getLogger("maas")

P = TypeVar("P")  # a family's prepared part of one request
Outputs = dict[str, np.ndarray]

# forwards shorter than this run on the event loop: a thread hand-off costs more than they do
INLINE_FORWARD_S = 0.0005
# on one usable core a thread gives no parallelism, only switches and cold caches (MiniLM: 9% faster
# inline); up to this long, so that health checks still answer in time
INLINE_FORWARD_ONE_CORE_S = 0.25
_TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("maas_ticket", default=None)


@dataclass
class RawV2:
    """A V2 REST request body as received, decoded in ``preprocess`` (not in the route)."""

    body: bytes
    content_type: str
    header_length: str | None


@dataclass
class Job(Generic[P]):
    """One validated request on its way through the batcher."""

    protocol: str  # v1 | v2 | grpc
    part: P
    items: int
    parameters: dict[str, Any]
    v2: V2Request | None = None
    outputs: Outputs | None = None


class MaasModel(Model, Generic[P]):
    """A ``kserve.Model`` with adaptive batching, strict validation, warm-up and metrics."""

    def __init__(self, name: str, model_dir: Path, config: ModelConfig, settings: Settings) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.config = config
        self.settings = settings
        self.ready = False
        self.device: Any = None
        self.dtype: Any = None
        self.batcher: AdaptiveBatcher[Job[P], Outputs] | None = None
        self.limits = Limits(
            max_elements=settings.max_tensor_elements, max_element_bytes=int(settings.max_element_mb * (1 << 20))
        )
        self._loading = False
        metrics.model_info(name, config.version, config.family)

    # ---- hooks for families -------------------------------------------------------------
    @abstractmethod
    def build(self) -> None:
        """Create the torch module(s) on ``self.device``/``self.dtype`` (torch imported here)."""

    @abstractmethod
    def input_specs(self) -> list[TensorSpec]:
        """The V2 inputs this model accepts."""

    @abstractmethod
    def output_specs(self) -> list[TensorSpec]:
        """The V2 outputs this model produces."""

    @abstractmethod
    def prepare_v1(self, instances: list[Any], parameters: dict[str, Any]) -> tuple[P, int]:
        """Validate V1 ``instances``; return the model-ready part and its row count."""

    @abstractmethod
    def prepare_v2(self, request: V2Request) -> tuple[P, int]:
        """Validate V2 input tensors; return the model-ready part and its row count."""

    @abstractmethod
    def collate(self, parts: Sequence[P]) -> Any:
        """Join parts (in order) into one model input."""

    @abstractmethod
    def run(self, batch: Any) -> Outputs:
        """The forward pass on a collated batch; arrays whose first axis is the rows."""

    @abstractmethod
    def finish(self, outputs: Outputs, parameters: dict[str, Any]) -> Outputs:
        """Per-request outputs (e.g. labels, top-k) from one request's rows."""

    @abstractmethod
    def format_v1(self, outputs: Outputs, parameters: dict[str, Any]) -> list[Any]:
        """V1 ``predictions`` from one request's outputs."""

    @abstractmethod
    def warmup_parts(self) -> list[P]:
        """Representative parts for warm-up passes."""

    def split(self, part: P, rows: int) -> list[P]:
        """``part`` cut into pieces of at most ``rows`` rows, so that a request larger than
        ``--max_batch_size`` runs in several forwards; ``[part]`` where a family cannot cut it."""
        return [part]

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        """Validate request parameters before batching (400 on a bad one)."""

    def accepts_empty(self, parameters: dict[str, Any]) -> bool:
        """Whether a request without instances or inputs is valid (e.g. generation from a seed)."""
        return False

    def batch_key(self, job: Job[P]) -> Hashable:
        """Only jobs with equal keys share a forward pass (``None``: any jobs may)."""
        return None

    @classmethod
    def resolve(cls, config: ModelConfig, model_dir: Path) -> type[MaasModel[Any]]:
        """The class that serves this model directory: a family with several tasks picks one."""
        return cls

    # ---- loading ------------------------------------------------------------------------
    def load(self) -> bool:
        """Build the model and warm it up; ``ready`` turns true only after both."""
        if self.ready:
            return True
        if self._loading:
            raise NotReady(f"model {self.name} is still loading")
        self._loading = True
        try:
            started = time.perf_counter()
            self._select_device()
            logger.info(
                "loading %s (%s) from %s on %s/%s",
                self.name,
                self.config.family,
                self.model_dir,
                self.device,
                self.dtype,
            )
            self.build()
            self.batcher = AdaptiveBatcher(
                self._run_batch,
                executor=ThreadPoolExecutor(1, thread_name_prefix=f"maas-{self.name}"),
                max_batch_size=self.settings.max_batch_size,
                max_delay=self.settings.max_batch_delay_ms / 1000.0,
                max_queue_size=self.settings.max_queue_size,
                max_wait=self.settings.max_queue_wait_ms / 1000.0,
                inline_below=self.inline_below(),
                on_batch=metrics.batch_observer(self.name),
            )
            if self.settings.warmup:
                self._warmup()
            self.ready = True
            metrics.model_ready(self.name, True)
            logger.info("model %s ready in %.2fs", self.name, time.perf_counter() - started)
        finally:
            self._loading = False
        return self.ready

    def _select_device(self) -> None:
        import torch

        wanted = self.settings.device
        if wanted == Device.CUDA and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but CUDA is not available")
        use_cuda = wanted == Device.CUDA or (wanted == Device.AUTO and torch.cuda.is_available())
        self.device = torch.device("cuda" if use_cuda else "cpu")
        dtypes = {DType.FLOAT32: torch.float32, DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}
        self.dtype = dtypes.get(self.settings.dtype, torch.float32)
        if self.dtype != torch.float32 and not use_cuda:
            raise ConfigError(f"--dtype {self.settings.dtype.value} needs CUDA; this model runs on the CPU")
        torch.set_num_threads(self.threads)

    @property
    def threads(self) -> int:
        """Intra-op threads: as set, else the cores this process may use (affinity, cgroup quota)."""
        return self.settings.torch_threads or default_threads()

    def inline_below(self) -> float:
        """Seconds of forward below which a batch runs on the event loop (see ``batching``)."""
        if self.settings.inline_forward_ms is not None:
            return self.settings.inline_forward_ms / 1000.0
        return INLINE_FORWARD_S if available_cores() >= 2 else INLINE_FORWARD_ONE_CORE_S

    def _warmup(self) -> None:
        parts = self.warmup_parts()
        started = time.perf_counter()
        for size in sorted({1, min(len(parts), self.settings.max_batch_size)}):
            self._run_batch([Job("warmup", p, 1, {}) for p in parts[:size]])
        logger.info("warm-up of %s took %.3fs", self.name, time.perf_counter() - started)

    def _run_batch(self, jobs: Sequence[Job[P]]) -> list[Outputs]:
        """Runs on the model thread: one forward pass, rows split back per request."""
        import torch

        limit = self.settings.max_batch_size
        # batches hold at most max_batch_size items, but one request may hold more: it runs in pieces
        pieces = self.split(jobs[0].part, limit) if len(jobs) == 1 and jobs[0].items > limit else []
        with torch.inference_mode():
            outputs = self._forward(pieces) if len(pieces) > 1 else self.run(self.collate([j.part for j in jobs]))
        results, start = [], 0
        for job in jobs:
            rows = {name: array[start : start + job.items] for name, array in outputs.items()}
            results.append(self.finish(rows, job.parameters))
            start += job.items
        return results

    def _forward(self, pieces: list[P]) -> Outputs:
        """One request's pieces, a forward each, their rows joined."""
        outputs = [self.run(self.collate([piece])) for piece in pieces]
        return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}

    def first_input(self, layout: str) -> TensorSpec:
        """The model config's first declared input (the tensor families take)."""
        if not self.config.inputs:
            raise ConfigError(f"a {self.config.family} model config needs 'inputs' with its {layout} tensor")
        return self.config.inputs[0]

    def build_torch_module(self) -> Any:
        """The config's ``module`` built, loaded strictly and put on the model's device and dtype."""
        from predictors.modules import build_module

        if self.config.module is None:
            raise ConfigError(f"a {self.config.family} model config needs a 'module' section")
        return build_module(self.config.module, self.model_dir, self.device, self.dtype)

    def tensor(self, array: np.ndarray) -> Any:
        """A numpy batch as a torch tensor on the model's device (floats in the model's dtype)."""
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.is_floating_point():
            return tensor.to(self.device, self.dtype, non_blocking=True)
        return tensor.to(self.device, non_blocking=True)

    # ---- kserve hooks -------------------------------------------------------------------
    async def __call__(self, body: Any, headers: dict[str, str] | None = None, verb: Any = None) -> Any:
        """preprocess -> predict -> postprocess, with the request's ticket held from arrival to
        answer so the batcher sees concurrency. (kserve's own ``__call__`` adds per-stage
        histograms that maas's batch and request metrics replace.)"""
        if not self.ready or self.batcher is None:
            raise NotReady(f"model {self.name} is not ready")
        ticket = _TICKET.get()
        if ticket is None or not ticket.of(self.batcher):
            ticket = self.batcher.ticket()
        token = _TICKET.set(ticket)
        try:
            job = await self.preprocess(body, headers)
            ticket.queued()
            return await self.postprocess(await self.predict(job, headers), headers), {}
        finally:
            ticket.close()
            _TICKET.reset(token)

    def arrived(self) -> None:
        """Count a request for this model from the moment the transport accepts it, before its body
        is read (the gRPC server calls this): ``__call__`` in the same task takes the ticket over, and
        it is closed at the latest when the task ends."""
        if not self.ready or self.batcher is None:
            return
        ticket = self.batcher.ticket()
        _TICKET.set(ticket)
        task = asyncio.current_task()
        if task is None:
            ticket.close()
            return
        task.add_done_callback(lambda _: ticket.close())

    def validate(self, payload: Any) -> Any:
        return payload  # validation happens in preprocess, against the model's specs

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Job[P]:
        if isinstance(payload, RawV2):
            if payload.header_length is not None:
                v2 = decode_binary(payload.body, payload.header_length, self.limits)
            elif _is_json(payload.content_type):
                v2 = decode_json(payload.body, self.limits)
            else:
                raise UnsupportedMediaType(
                    f"content type {payload.content_type!r} is not supported; send application/json "
                    f"or the binary tensor extension ({HEADER_LENGTH} header)"
                )
            return self._v2_job(v2)
        if _is_grpc_request(payload):
            return self._v2_job(decode_grpc(payload, self.limits))
        if isinstance(payload, (bytes, bytearray)):
            content_type = (headers or {}).get("content-type", "")
            if not _is_json(content_type):
                raise UnsupportedMediaType(f"content type {content_type!r} is not supported; send application/json")
            import orjson

            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
        if isinstance(payload, dict):
            return self._v1_job(payload)
        raise InvalidRequest("expected a V1 JSON object with 'instances' or a V2 inference request")

    def _v1_job(self, body: dict[str, Any]) -> Job[P]:
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidRequest("'parameters' must be an object")
        self.check_parameters(parameters)
        empty_ok = self.accepts_empty(parameters)
        instances = body.get("instances", body.get("inputs", [] if empty_ok else None))
        if not isinstance(instances, list):
            raise InvalidRequest("a V1 request needs an 'instances' list")
        if not instances and not empty_ok:
            raise InvalidRequest("'instances' is empty")
        part, items = self.prepare_v1(instances, parameters)
        return Job("v1", part, items, parameters)

    def _v2_job(self, request: V2Request) -> Job[P]:
        self.check_parameters(request.parameters)
        if not request.inputs and not self.accepts_empty(request.parameters):
            raise InvalidRequest("'inputs' must be a non-empty list")
        request.output_names(self.output_names)
        part, items = self.prepare_v2(request)
        if items == 0:
            raise InvalidRequest("the batch is empty")
        return Job(request.protocol, part, items, request.parameters, v2=request)

    async def predict(self, job: Job[P], headers: dict[str, str] | None = None) -> Job[P]:
        assert self.batcher is not None
        job.outputs = await self.batcher.submit(job, job.items, _TICKET.get(), self.batch_key(job))
        return job

    async def postprocess(self, job: Job[P], headers: dict[str, str] | None = None) -> Any:
        assert job.outputs is not None
        if job.v2 is None:
            return {"predictions": self.format_v1(job.outputs, job.parameters)}
        wanted = job.v2.output_names(list(job.outputs))
        outputs = {name: job.outputs[name] for name in wanted}
        if job.protocol == "grpc":
            return encode_grpc(self.name, job.v2, outputs)
        return encode_rest(self.name, job.v2, outputs)

    @functools.cached_property
    def output_names(self) -> list[str]:
        """The names ``output_specs`` declares (fixed once the model is built)."""
        return [spec.name for spec in self.output_specs()]

    def get_input_types(self) -> list[dict[str, Any]]:
        return [spec.metadata() for spec in self.input_specs()]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [spec.metadata() for spec in self.output_specs()]


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json", "application/cloudevents+json", "application/ld+json")


def _is_grpc_request(payload: Any) -> bool:
    return type(payload).__name__ == "ModelInferRequest" and hasattr(payload, "raw_input_contents")
