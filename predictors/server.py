"""The kserve ModelServer, extended: V2 REST inference in front of FastAPI (``predictors.front``),
errors with status, metrics, host binding, draining, and loading in the background so liveness
answers while a large model loads.

Everything else (V1 REST, health, model metadata, the gRPC service and its other methods) is
kserve's own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from kserve import ModelServer
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.server import RESTServer
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from predictors.errors import REPOSITORY_REFUSAL, ConfigError, Forbidden, NotReady, PredictorError
from predictors.front import InferenceFront, error_response, registered_model
from predictors.grpc_service import MaasGRPCServer
from predictors.memory import freeze_loaded_heap

logger = logging.getLogger("maas")
LINGER = 0.25  # seconds a just-accepted connection has to send its request during shutdown


def path_model(dataplane: DataPlane, request: Request) -> Any:
    """The model a request's path names (404 when absent), at the version it names, if any."""
    wanted = request.path_params.get("model_version") or request.query_params.get("model_version")
    return registered_model(dataplane, request.path_params["model_name"], wanted)


def repository_endpoint(dataplane: DataPlane):
    """``POST /v2/repository/models/{name}/load|unload``: one model per process, loaded at start.

    kserve's extension would let any caller unload the served model; maas refuses (403) and
    answers load of the served model as the no-op it is."""

    async def repository(request: Request) -> Response:
        model = path_model(dataplane, request)
        if request.url.path.endswith("/load"):
            return ORJSONResponse({"name": model.name, "load": bool(model.ready)})
        raise Forbidden(REPOSITORY_REFUSAL)

    return repository


def v2_model_endpoints(dataplane: DataPlane):
    """``GET /v2/models/{name}[/versions/{v}][/ready]`` with versions answered, not 501."""

    async def metadata(request: Request) -> Response:
        model = path_model(dataplane, request)
        body = await dataplane.model_metadata(model.name)
        version = getattr(getattr(model, "config", None), "version", None)
        if version:
            body["versions"] = [version]
        return ORJSONResponse(body)

    async def ready(request: Request) -> Response:
        model = path_model(dataplane, request)
        if not await dataplane.model_ready(model.name):
            raise NotReady(f"model {model.name} is not ready")
        return ORJSONResponse({"name": model.name, "ready": True})

    return metadata, ready


async def predictor_error_handler(_: Request, exc: Exception) -> Response:
    return error_response(exc)


def install(app: FastAPI, dataplane: DataPlane) -> None:
    """Put maas's routes ahead of kserve's, and its error handler in place (V2 inference is
    answered in front of the app: ``predictors.front``)."""
    metadata, ready = v2_model_endpoints(dataplane)
    prefixes = ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}")
    repository = repository_endpoint(dataplane)
    app.router.routes[:0] = [
        Route(f"/v2/repository/models/{{model_name}}/{verb}", repository, methods=["POST"])
        for verb in ("load", "unload")
    ]
    for prefix in prefixes:
        app.router.routes[:0] = [
            Route(prefix, metadata, methods=["GET"]),
            Route(f"{prefix}/ready", ready, methods=["GET"]),
        ]
    app.add_exception_handler(PredictorError, predictor_error_handler)


class MaasRESTServer(RESTServer):
    """kserve's REST server, bound to ``host``, with maas's routes installed first and
    ``InferenceFront`` before the app."""

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

        install(app, self.dataplane)
        super().create_application()
        self.config.app = InferenceFront(app, self.dataplane, self.max_body_bytes)


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
        frozen = freeze_loaded_heap()
        logger.info("froze %d loaded objects out of the garbage collector's way", frozen)
