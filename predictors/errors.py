"""Errors that carry their HTTP and gRPC status, mapped once for every protocol."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import grpc


class PredictorError(Exception):
    """Base of every error the predictors raise on purpose.

    ``http_status`` and ``grpc_status`` say how REST and gRPC answer it; ``retry_after`` (seconds)
    becomes a ``Retry-After`` header on HTTP.
    """

    http_status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    grpc_status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retry_after: float | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.http_status.value}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(PredictorError):
    """The request is malformed or does not match the model's input spec."""

    http_status = HTTPStatus.BAD_REQUEST
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class Forbidden(PredictorError):
    """The operation is not allowed on this server."""

    http_status = HTTPStatus.FORBIDDEN
    grpc_status = grpc.StatusCode.PERMISSION_DENIED


REPOSITORY_REFUSAL = "unloading models is disabled: a maas server serves one model; roll out a new version instead"


class NotFound(PredictorError):
    """The model or model version does not exist on this server."""

    http_status = HTTPStatus.NOT_FOUND
    grpc_status = grpc.StatusCode.NOT_FOUND


class PayloadTooLarge(PredictorError):
    """The request body or a tensor in it is over the configured limits."""

    http_status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnsupportedMediaType(PredictorError):
    """The request's content type is neither JSON nor the V2 binary tensor extension."""

    http_status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class Overloaded(PredictorError):
    """The batch queue is full: the client should retry later."""

    http_status = HTTPStatus.TOO_MANY_REQUESTS
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = 1.0


class QueueTimeout(PredictorError):
    """A request waited longer than the configured deadline without reaching the model."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_status = grpc.StatusCode.UNAVAILABLE
    retry_after = 1.0


class NotReady(PredictorError):
    """The model is loading, failed to load or the server is shutting down."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_status = grpc.StatusCode.UNAVAILABLE
    retry_after = 1.0


class ModelFailure(PredictorError):
    """The forward pass raised: only the requests of that batch fail."""

    http_status = HTTPStatus.INTERNAL_SERVER_ERROR
    grpc_status = grpc.StatusCode.INTERNAL


class ConfigError(Exception):
    """A model directory or setting is unusable: the server refuses to start."""


class ListenError(Exception):
    """The HTTP or gRPC port (or the host) cannot be listened on: the server refuses to start."""


def http_status_of(exc: BaseException) -> int:
    """The HTTP status an exception answers with, kserve's own errors included."""
    if isinstance(exc, PredictorError):
        return exc.http_status.value
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady

    if isinstance(exc, InvalidInput):
        return HTTPStatus.BAD_REQUEST.value
    if isinstance(exc, ModelNotFound):
        return HTTPStatus.NOT_FOUND.value
    if isinstance(exc, (ModelNotReady, ServerNotReady)):
        return HTTPStatus.SERVICE_UNAVAILABLE.value
    return HTTPStatus.INTERNAL_SERVER_ERROR.value


_GRPC_OF_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def grpc_status_of(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status an exception answers with."""
    if isinstance(exc, PredictorError):
        return exc.grpc_status
    return _GRPC_OF_HTTP.get(http_status_of(exc), grpc.StatusCode.INTERNAL)
