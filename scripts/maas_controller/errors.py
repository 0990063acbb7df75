"""Errors that carry their status, so the CLI maps each kind once (no bare RuntimeError)."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """The CLI's exit codes: the one place they are defined (``--help`` prints them)."""

    OK = 0
    INVALID_ARGUMENT = 2
    NOT_FOUND = 3
    CONFLICT = 4
    REJECTED = 5
    TIMED_OUT = 6
    ROLLED_BACK = 7
    API_ERROR = 8
    PROMETHEUS_UNAVAILABLE = 9
    NO_ACCESS = 10
    INTERRUPTED = 130


EXIT_CODES: dict[ExitCode, str] = {
    ExitCode.OK: "OK",
    ExitCode.INVALID_ARGUMENT: "invalid argument",
    ExitCode.NOT_FOUND: "not found",
    ExitCode.CONFLICT: "conflict",
    ExitCode.REJECTED: "rejected by the API (422)",
    ExitCode.TIMED_OUT: "timed out",
    ExitCode.ROLLED_BACK: "rolled back",
    ExitCode.API_ERROR: "other API error",
    ExitCode.PROMETHEUS_UNAVAILABLE: "Prometheus unavailable",
    ExitCode.NO_ACCESS: "cannot reach or authenticate to the Kubernetes API (kubeconfig, context, "
    "network, TLS, 401/403)",
    ExitCode.INTERRUPTED: "interrupted",
}


def exit_code_table() -> str:
    """``--help``'s epilog: one line per exit code."""
    return "exit codes:\n" + "\n".join(f"  {int(code):>3}  {text}" for code, text in EXIT_CODES.items())


class ControllerError(Exception):
    """Base error: ``status`` is HTTP-like, ``exit_code`` is what the CLI exits with."""

    status: int = 500
    exit_code: int = ExitCode.API_ERROR

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        if status is not None:
            self.status = status


class ValidationError(ControllerError):
    """Bad arguments, found before anything is sent to the cluster."""

    status = 400
    exit_code = ExitCode.INVALID_ARGUMENT


class NotFound(ControllerError):
    """The InferenceService, ConfigMap or version does not exist (404)."""

    status = 404
    exit_code = ExitCode.NOT_FOUND


class Conflict(ControllerError):
    """A write lost a race (409) more times than we retry, or the state forbids the command."""

    status = 409
    exit_code = ExitCode.CONFLICT


class Invalid(ControllerError):
    """The API server rejected the object (422)."""

    status = 422
    exit_code = ExitCode.REJECTED


class WaitTimeout(ControllerError):
    """The InferenceService did not become Ready in time."""

    status = 504
    exit_code = ExitCode.TIMED_OUT


class RolledBack(ControllerError):
    """A progressive rollout found the canary unhealthy and rolled it back."""

    status = 503
    exit_code = ExitCode.ROLLED_BACK


class ApiError(ControllerError):
    """Any other API failure; keeps status, reason and the server's message."""

    exit_code = ExitCode.API_ERROR


class AccessError(ControllerError):
    """The Kubernetes API cannot be reached or will not let us in: no or bad kubeconfig, unknown
    context, network or TLS failure, 401 Unauthorized, 403 Forbidden."""

    status = 503
    exit_code = ExitCode.NO_ACCESS


_BY_STATUS: dict[int, type[ControllerError]] = {
    401: AccessError,
    403: AccessError,
    404: NotFound,
    409: Conflict,
    422: Invalid,
}


def from_api_exception(exc: Any, what: str, permission: str = "") -> ControllerError:
    """Translate a ``kubernetes.client.ApiException`` into our error, keeping its status.

    ``permission`` (e.g. ``get inferenceservices.serving.kserve.io in namespace ns``) names the
    RBAC rule a 403 is missing.
    """
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
    if status == 401:
        text += "; the API server did not accept your credentials: log in again or pick another --context/--kubeconfig"
    elif status == 403:
        needed = f" to {permission}" if permission else ""
        text += (
            f"; your account lacks the RBAC permission{needed}: ask a cluster admin for a Role/RoleBinding "
            "granting it (the chart's controller Role lists all the controller needs)"
        )
    return _BY_STATUS.get(status, ApiError)(text, status=status, reason=reason)
