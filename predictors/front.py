"""The REST server's front door: V2 inference answered here, everything else by kserve's FastAPI
app behind it.

FastAPI's stack (its error, telemetry and body-limit middlewares, kserve's, the exception and
exit-stack middlewares, then routing over some forty routes) costs a request more than decoding a
64-image binary tensor does; ``POST /v2/models/{name}[/versions/{v}]/infer`` skips it. Every
inference request, V1 (through FastAPI) and V2 alike, is counted and timed on ``/metrics``, held to
the body limit, and dropped from the batch queue when its client goes before the answer; while
the server drains, every answer says ``connection: close``. The OpenAI-compatible API
(``/openai/v1/...``) is answered here too (``predictors.openai_api``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from kserve.protocol.dataplane import DataPlane
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predictors import metrics
from predictors.base import MaasModel, RawV2
from predictors.errors import NotFound, NotReady, PayloadTooLarge, PredictorError, http_status_of
from predictors.metrics import CLIENT_CLOSED, UNKNOWN_MODEL
from predictors.openai_api import OpenAIFront
from predictors.responses import JSONResponse
from predictors.v2 import HEADER_LENGTH

logger = logging.getLogger("maas")


def registered_model(dataplane: DataPlane, name: str, version: str | None) -> Any:
    """The model ``name`` (404 when absent), at ``version`` if one is asked for."""
    model = dataplane.get_model_from_registry(name)
    served = getattr(getattr(model, "config", None), "version", None)
    if version and version != served:
        raise NotFound(f"model {name} has no version {version!r}; this server serves version {served!r}")
    return model


def error_response(exc: Exception) -> Response:
    """The JSON answer to an error, maas's or kserve's: its own status and message.

    Refusals while not ready are not logged here (the server logs each change of readiness once),
    other refusals at INFO, the server's own failures at ERROR, and the unexpected with a traceback."""
    status = http_status_of(exc)
    message = exc.message if isinstance(exc, PredictorError) else str(exc) or type(exc).__name__
    if _is_not_ready(exc):
        logger.debug("%s: %s", type(exc).__name__, message)
    elif isinstance(exc, PredictorError) or status != 500:
        logger.log(logging.ERROR if status >= 500 else logging.INFO, "%s: %s", type(exc).__name__, message)
    else:
        logger.exception("inference failed: %s", exc, exc_info=exc)
    if isinstance(exc, PredictorError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
        return JSONResponse(exc.to_json(), status_code=status, headers=headers)
    return JSONResponse({"error": message, "code": status}, status_code=status)


def _is_not_ready(exc: Exception) -> bool:
    from kserve.errors import ModelNotReady, ServerNotReady

    return isinstance(exc, (NotReady, ModelNotReady, ServerNotReady))


class InferenceFront:
    """ASGI app in front of kserve's FastAPI app (see the module docstring)."""

    def __init__(self, app: ASGIApp, dataplane: DataPlane, max_body_bytes: int) -> None:
        self.app = app
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.openai = OpenAIFront(dataplane, max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if getattr(self.dataplane, "draining", False):
            send = _closing(send)
        parts = scope["path"].strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v1", "models"] and parts[2].endswith(":predict"):
            await self._guarded("v1", parts[2][: -len(":predict")], self.app, scope, receive, send)
        elif scope["method"] == "POST" and _is_v2_infer(parts):
            await self._guarded("v2", parts[2], self._infer_v2, scope, receive, send)
        elif parts[:2] == ["openai", "v1"]:
            await self.openai(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _infer_v2(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v2/models/{name}[/versions/{version}]/infer``: the body goes to the model as is."""
        try:
            model = self._ready_model(scope)
            body = await _read_body(receive)
            headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
            raw = RawV2(body, headers.get("content-type", ""), headers.get(HEADER_LENGTH))
            (answer, answer_headers), _ = await model(raw, headers)
        except ClientGone:
            raise
        except Exception as exc:
            await error_response(exc)(scope, receive, send)
            return
        head = [(b"content-length", str(len(answer)).encode())]
        head += [(key.encode("latin-1"), value.encode("latin-1")) for key, value in answer_headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": answer})

    def _ready_model(self, scope: Scope) -> MaasModel[Any]:
        parts = scope["path"].strip("/").split("/")
        version = parts[4] if len(parts) == 6 else None
        if version is None and scope.get("query_string"):
            version = parse_qs(scope["query_string"].decode("latin-1")).get("model_version", [None])[-1]
        model = registered_model(self.dataplane, parts[2], version)
        if not model.ready:
            raise NotReady(f"model {model.name} is not ready")
        return model

    def _label(self, name: str) -> str:
        return name if self.dataplane.model_registry.get_model(name) is not None else UNKNOWN_MODEL

    async def _guarded(
        self, protocol: str, name: str, handler: ASGIApp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run ``handler`` counted, timed, under the body limit, and cancelled if the client goes
        before the answer starts (which drops the request from the batch queue)."""
        model = self._label(name)
        started = time.perf_counter()
        status = 500
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = PayloadTooLarge(f"request body of {int(declared)} bytes is over the limit of {limit}")
            await error_response(error)(scope, receive, send)
            metrics.observe_request(model, protocol, error.http_status.value, time.perf_counter() - started)
            return
        received = 0
        task = asyncio.current_task()
        watcher: asyncio.Task[bool] | None = None
        answering = False

        async def limited_receive() -> Message:
            nonlocal received, watcher
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            if watcher is None and (message["type"] != "http.request" or not message.get("more_body", False)):
                watcher = asyncio.ensure_future(_cancel_when_gone(receive, task, lambda: answering))
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status, answering
            if message["type"] == "http.response.start":
                status, answering = message["status"], True
            await send(message)

        try:
            await handler(scope, limited_receive, recording_send)
        except asyncio.CancelledError:
            if watcher is None or not watcher.done() or watcher.cancelled() or not watcher.result():
                raise  # cancelled from outside, not by a departed client
            if task is not None and hasattr(task, "uncancel"):  # 3.11+: this cancel is handled
                task.uncancel()
            status = CLIENT_CLOSED
        except ClientGone:
            status = CLIENT_CLOSED
        finally:
            if watcher is not None:
                watcher.cancel()
            metrics.observe_request(model, protocol, status, time.perf_counter() - started)


def _is_v2_infer(parts: list[str]) -> bool:
    """``v2/models/{name}/infer`` or ``v2/models/{name}/versions/{version}/infer``."""
    return (
        parts[-1] == "infer"
        and parts[:2] == ["v2", "models"]
        and (len(parts) == 4 or (len(parts) == 6 and parts[3] == "versions"))
    )


class ClientGone(Exception):
    """The client went before its request body was read: there is nobody to answer."""


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _cancel_when_gone(receive: Receive, task: asyncio.Task[Any] | None, answering: Any) -> bool:
    """Once the body is read, wait for the client to go; cancel its request if it goes before the
    answer starts. True when it cancelled."""
    message = await receive()
    if message["type"] == "http.disconnect" and task is not None and not task.done() and not answering():
        task.cancel()
        return True
    return False


def _closing(send: Send) -> Send:
    """``send`` that adds ``connection: close`` to the response head."""

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return closing_send
