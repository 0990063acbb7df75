"""Kubernetes API access with plain dicts: InferenceServices, ConfigMaps, Events, and waits.

Every call goes through ``_call`` so an ``ApiException`` becomes one of our errors with its
status kept (404 absent, 409 re-read and retry, 422 invalid). kserve's typed client is not used:
its models fail to validate with kubernetes>=37, and plain dicts are all the controller needs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from .errors import Conflict, ControllerError, WaitTimeout, from_api_exception
from .model import GROUP, PLURAL, VERSION

T = TypeVar("T")
Obj = dict[str, Any]


@dataclass
class Clock:
    """Wall time and sleeping, injectable so tests run rollouts without waiting."""

    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def iso(self) -> str:
        return datetime.fromtimestamp(self.now(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """In-cluster config inside a pod (unless a kubeconfig is named), else the kubeconfig."""
    from kubernetes import client, config

    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=kubeconfig, context=context)


class Kube:
    """The handful of API calls the controller makes, on plain dicts."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._api_exception = client.ApiException

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except self._api_exception as exc:
            raise from_api_exception(exc, what) from exc
        if result is None or isinstance(result, dict):
            return result
        return self._client.sanitize_for_serialization(result)  # typed core models -> dict

    # ---- InferenceServices --------------------------------------------------------------------

    def get_isvc(self, namespace: str, name: str) -> Obj:
        return self._call(
            f"get inferenceservice {namespace}/{name}",
            self._custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )

    def list_isvcs(self, namespace: str | None) -> list[Obj]:
        if namespace is None:
            result = self._call(
                "list inferenceservices", self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
            )
        else:
            result = self._call(
                f"list inferenceservices in {namespace}",
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
            )
        return list(result.get("items", []))

    def create_isvc(self, namespace: str, body: Obj) -> Obj:
        return self._call(
            f"create inferenceservice {namespace}/{body['metadata']['name']}",
            self._custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            body,
        )

    def patch_isvc(self, namespace: str, name: str, patch: Obj) -> Obj:
        """A JSON merge patch; put ``metadata.resourceVersion`` in it to make it conditional."""
        return self._call(
            f"patch inferenceservice {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            patch,
        )

    # ---- ConfigMaps and Events ----------------------------------------------------------------

    def get_configmap(self, namespace: str, name: str) -> Obj:
        return self._call(f"get configmap {namespace}/{name}", self._core.read_namespaced_config_map, name, namespace)

    def create_configmap(self, namespace: str, body: Obj) -> Obj:
        return self._call(
            f"create configmap {namespace}/{body['metadata']['name']}",
            self._core.create_namespaced_config_map,
            namespace,
            body,
        )

    def replace_configmap(self, namespace: str, name: str, body: Obj) -> Obj:
        """PUT with the read ``resourceVersion``: a concurrent writer makes this a 409."""
        return self._call(
            f"update configmap {namespace}/{name}", self._core.replace_namespaced_config_map, name, namespace, body
        )

    def create_event(self, namespace: str, body: Obj) -> None:
        """Best effort: an Event that cannot be written never fails a command."""
        with contextlib.suppress(ControllerError):
            self._call("create event", self._core.create_namespaced_event, namespace, body)


def retry_on_conflict(
    action: Callable[[], T], *, attempts: int = 8, clock: Clock | None = None, backoff: float = 0.05
) -> T:
    """Run ``action`` (which must re-read what it writes) again after each 409, a few times."""
    clock = clock or Clock()
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Conflict:
            if attempt == attempts:
                raise
            clock.sleep(backoff * attempt)
    raise AssertionError("unreachable")


def wait_until(
    fetch: Callable[[], Obj],
    check: Callable[[Obj], tuple[bool, str]],
    *,
    timeout: float,
    poll: float,
    clock: Clock,
    what: str,
) -> Obj:
    """Poll ``fetch`` until ``check`` says done; a timeout names the last reason seen."""
    deadline = clock.now() + timeout
    while True:
        obj = fetch()
        done, reason = check(obj)
        if done:
            return obj
        if clock.now() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}: {reason}")
        clock.sleep(poll)
