"""Errors that carry their status, so the CLI maps each kind once (no bare RuntimeError)."""

from __future__ import annotations

import json
from typing import Any


class ControllerError(Exception):
    """Base error: ``status`` is HTTP-like, ``exit_code`` is what the CLI exits with."""

    status: int = 500
    exit_code: int = 1

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        if status is not None:
            self.status = status


class ValidationError(ControllerError):
    """Bad arguments, found before anything is sent to the cluster."""

    status = 400
    exit_code = 2


class NotFound(ControllerError):
    """The InferenceService, ConfigMap or version does not exist (404)."""

    status = 404
    exit_code = 3


class Conflict(ControllerError):
    """A write lost a race (409) more times than we retry, or the state forbids the command."""

    status = 409
    exit_code = 4


class Invalid(ControllerError):
    """The API server rejected the object (422)."""

    status = 422
    exit_code = 5


class WaitTimeout(ControllerError):
    """The InferenceService did not become Ready in time."""

    status = 504
    exit_code = 6


class RolledBack(ControllerError):
    """A progressive rollout found the canary unhealthy and rolled it back."""

    status = 503
    exit_code = 7


class ApiError(ControllerError):
    """Any other API failure; keeps status, reason and the server's message."""

    exit_code = 8


_BY_STATUS: dict[int, type[ControllerError]] = {404: NotFound, 409: Conflict, 422: Invalid}


def from_api_exception(exc: Any, what: str) -> ControllerError:
    """Translate a ``kubernetes.client.ApiException`` into our error, keeping its status."""
    status = int(getattr(exc, "status", 0) or 0)
    reason = str(getattr(exc, "reason", "") or "")
    message = reason
    try:
        body = json.loads(exc.body or "{}")
        message = body.get("message") or message
        reason = body.get("reason") or reason
    except (TypeError, ValueError):
        pass
    text = f"{what}: {message} (HTTP {status})"
    return _BY_STATUS.get(status, ApiError)(text, status=status, reason=reason)
