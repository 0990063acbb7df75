"""The V2 gRPC service: kserve's servicer and server, with ``ModelInfer`` going straight to the
model (counted, errors mapped to their gRPC status) and calls counted from the moment they are
accepted, so that the batcher can batch them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any

import grpc
from grpc import aio
from kserve.errors import ModelNotFound
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from predictors import metrics
from predictors.base import MaasModel
from predictors.errors import (
    REPOSITORY_REFUSAL,
    Forbidden,
    ListenError,
    NotReady,
    PredictorError,
    grpc_status_of,
    http_status_of,
)
from predictors.metrics import CLIENT_CLOSED, UNKNOWN_MODEL

logger = logging.getLogger("maas")
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


class MaasServicer(InferenceServicer):
    """kserve's gRPC servicer with ``ModelInfer`` going straight to the model, counted and mapped."""

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        name = request.model_name
        label, status = UNKNOWN_MODEL, 200
        try:
            model = self._data_plane.get_model_from_registry(name)
            if not model.ready:
                raise NotReady(f"model {name} is not ready")
            label = name
            response, _ = await model(request, None)
            return response
        except asyncio.CancelledError:
            status = CLIENT_CLOSED  # the client cancelled or its deadline passed: dropped from the queue
            raise
        except Exception as exc:
            status = http_status_of(exc)
            if status >= 500 and not isinstance(exc, (PredictorError, ModelNotFound)):
                logger.exception("gRPC inference on %s failed", name)
            message = exc.message if isinstance(exc, PredictorError) else str(exc)
            await context.abort(grpc_status_of(exc), message)
        finally:
            metrics.observe_request(label, "grpc", status, time.perf_counter() - started)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await context.abort(Forbidden.grpc_status, REPOSITORY_REFUSAL)


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class InferArrivals(aio.ServerInterceptor):
    """Counts each ``ModelInfer`` call for the served model's batcher as soon as gRPC accepts it.

    grpc.aio accepts one call per event-loop turn and reads its message in later turns, so calls
    seldom meet inside the model: without this the batcher sees one call at a time and never
    batches. With a ticket from acceptance on, a forming batch waits (at most max_batch_delay_ms)
    for the calls still being read. ``ModelInfer`` handles its own errors; every other method goes
    through kserve's exception-to-status interceptor as before."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        self._others = ExceptionToStatusInterceptor()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method != INFER_METHOD:
            return await self._others.intercept_service(continuation, handler_call_details)
        model = self._served_model()
        if model is not None:
            model.arrived()  # the message names the model, but it is unread yet: count for the only one
        return await continuation(handler_call_details)

    def _served_model(self) -> MaasModel[Any] | None:
        models = self._dataplane.model_registry.get_models()
        if len(models) != 1:
            return None
        (model,) = models.values()
        return model if isinstance(model, MaasModel) else None


class MaasGRPCServer(GRPCServer):
    """kserve's gRPC server bound to ``host`` with ``MaasServicer`` and ``InferArrivals``."""

    def __init__(self, *args: Any, host: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host = host

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(InferArrivals(self._data_plane),),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            MaasServicer(self._data_plane, self._model_repository_extension), self._server
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            port = self._server.add_insecure_port(f"{host}:{self._port}")
        except RuntimeError:  # taken since the server checked it (``MaasModelServer.listen``)
            raise ListenError(f"cannot listen on {host}:{self._port} (--grpc_port); choose another port") from None
        logger.info("gRPC server listening on %s:%s", host, port)
        await self._server.start()
        await self._server.wait_for_termination()
