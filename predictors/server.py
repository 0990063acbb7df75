"""The kserve ModelServer, extended: V2 REST inference in front of FastAPI (``predictors.front``),
errors with status, metrics, host binding, draining, and loading in the background so liveness
answers while a large model loads.

Everything else (V1 REST, health, model metadata, the gRPC service and its other methods) is
kserve's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
from typing import Any

from fastapi import FastAPI
from kserve import ModelServer
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.server import RESTServer
from kserve.utils.inference_client_factory import InferenceClientFactory
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from predictors import metrics
from predictors.errors import REPOSITORY_REFUSAL, ConfigError, Forbidden, NotReady, PredictorError
from predictors.front import InferenceFront, error_response, registered_model
from predictors.grpc_service import MaasGRPCServer
from predictors.listen import accept_queue_length, check_free, listen, listening_sockets, refuse_new_connections
from predictors.loop import describe, run
from predictors.memory import freeze_loaded_heap
from predictors.responses import JSONResponse, quiet_kserve_warnings

logger = logging.getLogger("maas")
LINGER = 0.25  # seconds a just-accepted connection has to send its request during shutdown
SETTLE = 0.1  # seconds the accept queue stays empty before the listener closes (handshakes in flight)
EMPTYING_LIMIT = 5.0  # seconds at most to empty the accept queue


async def accept_queue_emptied(sock: socket.socket) -> bool:
    """Wait while the event loop accepts ``sock``'s queued connections, until the queue has stayed
    empty ``SETTLE`` seconds (True) or ``EMPTYING_LIMIT`` has passed (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EMPTYING_LIMIT
    empty_since: float | None = None
    while loop.time() < deadline:
        if accept_queue_length(sock):
            empty_since = None
        elif empty_since is None:
            empty_since = loop.time()
        elif loop.time() - empty_since >= SETTLE:
            return True
        await asyncio.sleep(0.01)
    return False


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
            return JSONResponse({"name": model.name, "load": bool(model.ready)})
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
        return JSONResponse(body)

    async def ready(request: Request) -> Response:
        model = path_model(dataplane, request)
        if not await dataplane.model_ready(model.name):
            raise NotReady(f"model {model.name} is not ready")
        return JSONResponse({"name": model.name, "ready": True})

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
    """kserve's REST server on a socket already listening, with maas's routes installed first, one
    error handler for maas's and kserve's errors, and ``InferenceFront`` before the app."""

    def __init__(
        self,
        *args: Any,
        sock: socket.socket,
        max_body_bytes: int,
        latency_logging: bool,
        access_log: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sock = sock
        self.max_body_bytes = max_body_bytes
        self.latency_logging = latency_logging
        if not access_log or self.access_log_format:  # (kserve's middleware writes the formatted lines)
            _silence_uvicorn_access_log()

    def _add_middlewares(self, app: FastAPI) -> None:
        """kserve's middlewares, with its per-request timing log only when ``--enable_latency_logging``
        asks for it: it matches the path against every route and formats two log lines per request,
        whether the log is kept or not (maas's own latency histograms are on /metrics either way)."""
        super()._add_middlewares(app)
        if not self.latency_logging:
            from timing_asgi import TimingMiddleware

            app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    def _add_exception_handlers(self, app: FastAPI) -> None:
        """kserve's handlers, except that its errors with a status of their own are answered (and
        logged) as maas's are: no traceback at ERROR for a 404, nor for a 503 while loading."""
        from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady

        super()._add_exception_handlers(app)
        for error in (InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady):
            app.add_exception_handler(error, predictor_error_handler)

    def create_application(self) -> None:
        from kserve.model_server import app

        quiet_kserve_warnings()
        install(app, self.dataplane)
        super().create_application()
        self.config.app = InferenceFront(app, self.dataplane, self.max_body_bytes)

    async def start(self) -> None:
        self.create_application()
        host, port = self.sock.getsockname()[:2]
        logger.info("HTTP server listening on %s:%s", f"[{host}]" if ":" in host else host, port)
        await self._server.serve(sockets=[self.sock])


def _silence_uvicorn_access_log() -> None:
    """No access-log line per request: uvicorn's protocols log one whenever its logger has handlers."""
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False


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

    def __init__(
        self, *, host: str, max_body_bytes: int, drain_delay: float = 0.0, access_log: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if self.workers != 1:
            raise ConfigError("--workers must be 1: scale out with replicas (one model copy per process)")
        if self.access_log_format and importlib.util.find_spec("asgi_logger") is None:
            raise ConfigError("--access_log_format needs the asgi-logger package: pip install asgi-logger")
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.drain_delay = drain_delay
        self.access_log = access_log
        self.dataplane = MaasDataPlane(model_registry=self.registered_models)
        self.http_socket: socket.socket | None = None
        self.load_error: BaseException | None = None
        self._grpc_listeners: list[socket.socket] = []  # duplicates of gRPC's own, to drain them
        self._stopping: asyncio.Task[None] | None = None

    def listen(self) -> None:
        """Take the HTTP port and check the gRPC port is free, before anything else starts
        (``ListenError`` when either cannot be had)."""
        if self.http_socket is None:
            self.http_socket = listen(self.host, self.http_port, "--http_port")
        if self.enable_grpc:
            check_free(self.host, self.grpc_port, "--grpc_port")

    def start(self, models: list[Any]) -> None:
        """Serve until stopped; loads ``models`` once listening, and raises what failed their load
        after the servers have stopped."""
        from kserve.model_server import FASTAPI_APP_IMPORT_STRING, args

        self.listen()
        assert self.http_socket is not None
        for model in models:
            self.register_model(model)
            model.enable_latency_logging = self.enable_latency_logging
        self._rest_server = MaasRESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            sock=self.http_socket,
            max_body_bytes=self.max_body_bytes,
            latency_logging=self.enable_latency_logging,
            access_log=self.access_log,
            access_log_format=self.access_log_format if self.access_log else None,
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
        run(self._serve(), self.event_loop)
        if self.load_error is not None:
            raise self.load_error

    def _drain_on_exit(self, uvicorn_server: Any) -> None:
        """Put draining in front of uvicorn's signal handling (a second signal stops at once).

        Order: not ready at once; serve on for ``drain_delay`` (answers say ``connection: close``);
        refuse new connections and accept those already queued (``_close_listeners``); give
        connections just accepted ``LINGER`` seconds to deliver their request; then uvicorn's own
        shutdown finishes what is in flight, and gRPC stops after it (``stop``)."""
        stop = uvicorn_server.handle_exit
        dataplane = self.dataplane
        assert isinstance(dataplane, MaasDataPlane)
        closing: set[asyncio.Task[None]] = set()

        async def drain(sig: int, frame: Any) -> None:
            await self._close_listeners(uvicorn_server)
            await asyncio.sleep(LINGER)
            if not uvicorn_server.should_exit:  # (a second signal has stopped it already)
                stop(sig, frame)

        def start_closing(sig: int, frame: Any) -> None:
            task = asyncio.get_running_loop().create_task(drain(sig, frame))
            closing.add(task)
            task.add_done_callback(closing.discard)

        def start_draining(sig: int, frame: Any) -> None:
            for name in dataplane.model_registry.get_models():
                metrics.model_ready(name, False)
            logger.info("signal %s: not ready; serving on for %.1fs, then draining", sig, self.drain_delay)
            asyncio.get_running_loop().call_later(self.drain_delay, start_closing, sig, frame)

        def handle_exit(sig: int, frame: Any) -> None:
            # A signal handler runs between any two bytecodes of the loop's own code, a heap push
            # of its timers included: it only sets flags and hands the rest to the loop.
            if dataplane.draining:
                stop(sig, frame)
                return
            dataplane.draining = True
            asyncio.get_running_loop().call_soon_threadsafe(start_draining, sig, frame)

        uvicorn_server.handle_exit = handle_exit

    async def _close_listeners(self, uvicorn_server: Any) -> None:
        """Close the HTTP listener without resetting a connection: closing a listening socket
        resets every connection still in its accept queue (requests already sent on them included),
        and clients that connect straight to the pod keep filling it. So new connection attempts
        are dropped first (the client's retry, a second later, is refused), the queue is accepted
        until it has stayed empty ``SETTLE`` seconds (handshakes under way complete meanwhile), and
        only then does the listener close. Where this cannot be done (not Linux) it closes at once.

        The gRPC listener refuses new connections from now on too; it closes when gRPC stops."""
        if self.enable_grpc:
            self._grpc_listeners = [s for s in listening_sockets(self.grpc_port) if refuse_new_connections(s)]
        sock = self.http_socket
        if sock is not None and refuse_new_connections(sock):
            logger.info("refusing new connections; closing the HTTP listener once its queue is accepted")
            if not await accept_queue_emptied(sock):
                logger.warning("accept queue not empty after %.0fs: closing it anyway", EMPTYING_LIMIT)
        for listener in getattr(uvicorn_server, "servers", []):
            listener.close()

    def stop(self, sig: int) -> None:
        """kserve's signal handler, called again once the REST server has drained: stop gRPC,
        then unload the model (kserve's own ``stop`` unloads it first, and gRPC calls still
        arriving get NOT_FOUND). A signal handler: it hands the work to the loop."""
        with contextlib.suppress(RuntimeError):  # (no loop running: not serving, yet or any more)
            asyncio.get_running_loop().call_soon_threadsafe(self._start_stopping)

    def _start_stopping(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop_grpc_then_unload())

    async def _stop_grpc_then_unload(self) -> None:
        """Stop gRPC within the grace period once its listener's queue is accepted (gRPC's core
        accepts on threads of its own), then unload the models."""
        await InferenceClientFactory().close()
        grpc_server = getattr(self._grpc_server, "_server", None)
        if grpc_server is not None:
            await asyncio.gather(*(accept_queue_emptied(sock) for sock in self._grpc_listeners))
            logger.info("stopping the gRPC server (grace %ss)", self.grace_period)
            await grpc_server.stop(self.grace_period)
        for sock in self._grpc_listeners:
            sock.close()
        for name in list(self.registered_models.get_models()):
            self.registered_models.unload(name)

    async def _load(self, models: list[Any]) -> None:
        """Load every model off the event loop (requests for it are refused meanwhile: said once,
        here, not per request); a failure stops the servers and ``start`` raises it."""
        loop = asyncio.get_running_loop()
        logger.info("event loop: %s (--event-loop %s)", describe(loop), self.event_loop)
        try:
            for model in models:
                logger.info("refusing requests for %s until it is ready (loading)", model.name)
                await loop.run_in_executor(None, model.load)
        except Exception as exc:
            self.load_error = exc
            await self._stop_serving()
            return
        frozen = freeze_loaded_heap()
        logger.info("froze %d loaded objects out of the garbage collector's way", frozen)

    async def _stop_serving(self) -> None:
        """Stop the REST and gRPC servers at once, letting both finish cleanly."""
        if self._rest_server is not None:
            self._rest_server._server.should_exit = True
        grpc_server = getattr(self._grpc_server, "_server", None)
        if grpc_server is not None:
            await grpc_server.stop(0)
