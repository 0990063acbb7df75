"""The kserve ModelServer, extended: fast V2 REST route, errors with status, metrics, host binding,
and loading in the background so liveness answers while a large model loads.

Everything else (V1 REST, health, model metadata, the gRPC service and its other methods) is
kserve's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from kserve import ModelServer
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.server import RESTServer
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predictors import metrics
from predictors.base import MaasModel, RawV2
from predictors.errors import (
    REPOSITORY_REFUSAL,
    ConfigError,
    Forbidden,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PredictorError,
)
from predictors.grpc_service import MaasGRPCServer
from predictors.metrics import CLIENT_CLOSED, UNKNOWN_MODEL
from predictors.v2 import HEADER_LENGTH

logger = logging.getLogger("maas")
LINGER = 0.25  # seconds a just-accepted connection has to send its request during shutdown


def registered_model(dataplane: DataPlane, request: Request) -> Any:
    """The model a request's path names (404 when absent), at the version it names, if any."""
    name = request.path_params["model_name"]
    model = dataplane.get_model_from_registry(name)
    wanted = request.path_params.get("model_version") or request.query_params.get("model_version")
    served = getattr(getattr(model, "config", None), "version", None)
    if wanted and wanted != served:
        raise NotFound(f"model {name} has no version {wanted!r}; this server serves version {served!r}")
    return model


def ready_model(dataplane: DataPlane, request: Request) -> MaasModel[Any]:
    """The model a request names: 404 when absent, 503 while it is not ready."""
    model = registered_model(dataplane, request)
    if not model.ready:
        raise NotReady(f"model {model.name} is not ready")
    return model


def repository_endpoint(dataplane: DataPlane):
    """``POST /v2/repository/models/{name}/load|unload``: one model per process, loaded at start.

    kserve's extension would let any caller unload the served model; maas refuses (403) and
    answers load of the served model as the no-op it is."""

    async def repository(request: Request) -> Response:
        model = registered_model(dataplane, request)
        if request.url.path.endswith("/load"):
            return ORJSONResponse({"name": model.name, "load": bool(model.ready)})
        raise Forbidden(REPOSITORY_REFUSAL)

    return repository


def v2_model_endpoints(dataplane: DataPlane):
    """``GET /v2/models/{name}[/versions/{v}][/ready]`` with versions answered, not 501."""

    async def metadata(request: Request) -> Response:
        model = registered_model(dataplane, request)
        body = await dataplane.model_metadata(model.name)
        version = getattr(getattr(model, "config", None), "version", None)
        if version:
            body["versions"] = [version]
        return ORJSONResponse(body)

    async def ready(request: Request) -> Response:
        model = registered_model(dataplane, request)
        if not await dataplane.model_ready(model.name):
            raise NotReady(f"model {model.name} is not ready")
        return ORJSONResponse({"name": model.name, "ready": True})

    return metadata, ready


def v2_infer_endpoint(dataplane: DataPlane):
    """``POST /v2/models/{name}[/versions/{v}]/infer`` without kserve's list round-trip."""

    async def infer(request: Request) -> Response:
        model = ready_model(dataplane, request)
        raw = RawV2(
            body=await request.body(),
            content_type=request.headers.get("content-type", ""),
            header_length=request.headers.get(HEADER_LENGTH),
        )
        (body, headers), _ = await model(raw, dict(request.headers))
        return Response(body, headers=headers)

    return infer


async def predictor_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, PredictorError)
    level = logging.ERROR if exc.http_status >= 500 else logging.INFO
    logger.log(level, "%s: %s", type(exc).__name__, exc.message)
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    return ORJSONResponse(exc.to_json(), status_code=exc.http_status.value, headers=headers)


class CloseWhileDraining:
    """While draining, answer with ``connection: close`` so clients stop reusing connections
    before the listener closes (no request is then sent on a connection about to be dropped)."""

    def __init__(self, app: ASGIApp, dataplane: DataPlane) -> None:
        self.app = app
        self.dataplane = dataplane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not getattr(self.dataplane, "draining", False):
            await self.app(scope, receive, send)
            return

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing_send)


class InferenceMetricsMiddleware:
    """Counts inference requests by protocol and status, times them, and enforces the body limit."""

    def __init__(self, app: ASGIApp, dataplane: DataPlane, max_body_bytes: int) -> None:
        self.app = app
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes

    def _classify(self, path: str) -> tuple[str, str] | None:
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v1", "models"] and parts[2].endswith(":predict"):
            return "v1", self._label(parts[2][: -len(":predict")])
        if len(parts) >= 4 and parts[:2] == ["v2", "models"] and parts[-1] == "infer":
            return "v2", self._label(parts[2])
        return None

    def _label(self, name: str) -> str:
        return name if self.dataplane.model_registry.get_model(name) is not None else UNKNOWN_MODEL

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = self._classify(scope["path"]) if scope["type"] == "http" else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        protocol, model = kind
        started = time.perf_counter()
        status = 500
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = PayloadTooLarge(f"request body of {int(declared)} bytes is over the limit of {limit}")
            response = await predictor_error_handler(Request(scope), error)
            await response(scope, receive, send)
            metrics.observe_request(model, protocol, error.http_status.value, time.perf_counter() - started)
            return
        received = 0
        body_read = asyncio.Event()

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        app = asyncio.ensure_future(self.app(scope, limited_receive, recording_send))
        watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, body_read, app))
        try:
            await app
        except asyncio.CancelledError:
            if not watcher.done() or not watcher.result():
                raise  # cancelled from outside, not by a departed client
            status = CLIENT_CLOSED
        finally:
            watcher.cancel()
            metrics.observe_request(model, protocol, status, time.perf_counter() - started)


async def _cancel_on_disconnect(receive: Receive, body_read: asyncio.Event, app: asyncio.Future[None]) -> bool:
    """Once the body is read, wait for the client to go; cancel its request (dropping it from the
    batch queue) if it goes before the answer. True when it cancelled."""
    await body_read.wait()
    message = await receive()
    if message["type"] == "http.disconnect" and not app.done():
        app.cancel()
        return True
    return False


def install(app: FastAPI, dataplane: DataPlane, max_body_bytes: int) -> None:
    """Put maas's routes ahead of kserve's, and its error handler and middleware in place."""
    infer = v2_infer_endpoint(dataplane)
    metadata, ready = v2_model_endpoints(dataplane)
    prefixes = ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}")
    repository = repository_endpoint(dataplane)
    app.router.routes[:0] = [
        Route(f"/v2/repository/models/{{model_name}}/{verb}", repository, methods=["POST"])
        for verb in ("load", "unload")
    ]
    for prefix in prefixes:
        app.router.routes[:0] = [
            Route(f"{prefix}/infer", infer, methods=["POST"]),
            Route(prefix, metadata, methods=["GET"]),
            Route(f"{prefix}/ready", ready, methods=["GET"]),
        ]
    app.add_exception_handler(PredictorError, predictor_error_handler)
    app.add_middleware(InferenceMetricsMiddleware, dataplane=dataplane, max_body_bytes=max_body_bytes)
    app.add_middleware(CloseWhileDraining, dataplane=dataplane)


class MaasRESTServer(RESTServer):
    """kserve's REST server, bound to ``host``, with maas's routes installed first."""

    def __init__(self, *args: Any, host: str, max_body_bytes: int, latency_logging: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host
        self.max_body_bytes = max_body_bytes
        self.latency_logging = latency_logging

    def _add_middlewares(self, app: FastAPI) -> None:
        """kserve's middlewares, with its per-request timing log only when ``--enable_latency_logging``
        asks for it: it matches the path against every route and formats two log lines per request,
        whether the log is kept or not (maas's own latency histograms are on /metrics either way)."""
        super()._add_middlewares(app)
        if not self.latency_logging:
            from timing_asgi import TimingMiddleware

            app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    def create_application(self) -> None:
        from kserve.model_server import app

        install(app, self.dataplane, self.max_body_bytes)
        super().create_application()


class MaasDataPlane(DataPlane):
    """Readiness that means it: false until every model is loaded, and false once draining."""

    draining = False

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return not self.draining and bool(models) and all(m.ready for m in models)

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        ready = await super().model_ready(model_name, disable_predictor_health_check)
        # inference paths pass disable_predictor_health_check=True: they keep being served while draining
        return bool(ready) and (disable_predictor_health_check or not self.draining)


class MaasModelServer(ModelServer):
    """kserve's ModelServer that binds ``host``, loads models after its servers are up, and drains
    on SIGTERM: not ready at once, serving on for ``drain_delay`` seconds (while load balancers
    notice), then closing the listeners and finishing every accepted request within the grace period."""

    def __init__(self, *, host: str, max_body_bytes: int, drain_delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.drain_delay = drain_delay
        self.dataplane = MaasDataPlane(model_registry=self.registered_models)

    def start(self, models: list[Any]) -> None:
        if self.workers != 1:
            raise ConfigError("--workers must be 1: scale out with replicas (one model copy per process)")
        from kserve.model_server import FASTAPI_APP_IMPORT_STRING, args

        for model in models:
            self.register_model(model)
            model.enable_latency_logging = self.enable_latency_logging
        self._rest_server = MaasRESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            host=self.host,
            max_body_bytes=self.max_body_bytes,
            latency_logging=self.enable_latency_logging,
            access_log_format=self.access_log_format,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
        )
        self._drain_on_exit(self._rest_server._server)
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = MaasGRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(args),
                grace_period=self.grace_period,
                host=self.host,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.servers.append(self._load(models))
        self.register_signal_handler()
        asyncio.run(self._serve())

    def _drain_on_exit(self, uvicorn_server: Any) -> None:
        """Put draining in front of uvicorn's signal handling (a second signal stops at once).

        Order: not ready at once; serve on for ``drain_delay`` (answers say ``connection: close``);
        stop accepting connections; give connections just accepted ``LINGER`` seconds to deliver
        their request; then uvicorn's own shutdown finishes what is in flight."""
        stop = uvicorn_server.handle_exit
        dataplane = self.dataplane
        assert isinstance(dataplane, MaasDataPlane)

        def close_listeners(sig: int, frame: Any) -> None:
            for listener in getattr(uvicorn_server, "servers", []):
                listener.close()
            asyncio.get_running_loop().call_later(LINGER, stop, sig, frame)

        def handle_exit(sig: int, frame: Any) -> None:
            if dataplane.draining:
                stop(sig, frame)
                return
            dataplane.draining = True
            logger.info("signal %s: not ready; serving on for %.1fs, then draining", sig, self.drain_delay)
            asyncio.get_running_loop().call_later(self.drain_delay, close_listeners, sig, frame)

        uvicorn_server.handle_exit = handle_exit

    async def _load(self, models: list[Any]) -> None:
        """Load every model off the event loop; a failure stops the server (non-zero exit)."""
        loop = asyncio.get_running_loop()
        for model in models:
            await loop.run_in_executor(None, model.load)
