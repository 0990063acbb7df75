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
from urllib.parse import urlparse

from .errors import AccessError, Conflict, ControllerError, WaitTimeout, from_api_exception
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


def _kubeconfig_path(kubeconfig: str | None) -> str:
    """The kubeconfig to read: ``--kubeconfig``, else ``$KUBECONFIG`` (a path list), else ~/.kube/config."""
    if kubeconfig is not None:
        if not os.path.isfile(os.path.expanduser(kubeconfig)):
            raise AccessError(
                f"kubeconfig {kubeconfig} does not exist or is not a file; pass an existing file with --kubeconfig"
            )
        return kubeconfig
    env = os.environ.get("KUBECONFIG", "")
    paths = [p for p in env.split(os.pathsep) if p] or [os.path.join("~", ".kube", "config")]
    if not any(os.path.isfile(os.path.expanduser(p)) for p in paths):
        where = f"KUBECONFIG={env}" if env else f"{os.path.expanduser(paths[0])}"
        raise AccessError(
            f"no kubeconfig found ({where} does not exist) and not running in a cluster; "
            "set KUBECONFIG or pass --kubeconfig"
        )
    return os.pathsep.join(paths)


def _read_kubeconfigs(path: str) -> list[dict[str, Any]]:
    """The kubeconfig documents in ``path`` (a path list), each checked to be a mapping."""
    import yaml

    docs = []
    for one in path.split(os.pathsep):
        full = os.path.expanduser(one)
        if not os.path.isfile(full):
            continue
        try:
            with open(full, encoding="utf-8") as stream:
                doc = yaml.safe_load(stream)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            detail = " ".join(str(exc).split())
            raise AccessError(
                f"kubeconfig {one} is malformed ({detail}); fix it or pass another with --kubeconfig"
            ) from exc
        if not isinstance(doc, dict) or not {"clusters", "users", "contexts"} & doc.keys():
            what = "empty" if doc is None else "not a kubeconfig (no clusters, users or contexts)"
            raise AccessError(f"kubeconfig {one} is {what}; fix it or pass another with --kubeconfig")
        docs.append(doc)
    return docs


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """In-cluster config inside a pod (unless a kubeconfig is named), else the kubeconfig.

    Every problem with the configuration is an ``AccessError`` (exit 10) naming what to fix.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise AccessError(
                f"in-cluster config: {str(exc).rstrip('.')}; mount a service account token or pass --kubeconfig"
            ) from exc
        return client.ApiClient(cfg)
    path = _kubeconfig_path(kubeconfig)
    docs = _read_kubeconfigs(path)
    names = [c.get("name") for d in docs for c in d.get("contexts") or [] if isinstance(c, dict)]
    known = ", ".join(map(str, names)) or "none"
    if context is not None and context not in names:
        raise AccessError(f"context {context!r} is not in kubeconfig {path} (it has: {known}); pick one with --context")
    if context is None and not any(d.get("current-context") for d in docs):
        raise AccessError(f"kubeconfig {path} sets no current-context; pick a context with --context (it has: {known})")
    try:
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    except ConfigException as exc:
        detail = str(exc).removeprefix("Invalid kube-config file. ").removeprefix("Invalid kube-config. ")
        raise AccessError(f"kubeconfig {path}: {detail}; fix it or pass another with --kubeconfig/--context") from exc
    except (OSError, TypeError, AttributeError, KeyError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise AccessError(
            f"kubeconfig {path} is malformed ({detail}); fix it or pass another with --kubeconfig"
        ) from exc
    if not urlparse(cfg.host or "").hostname:
        raise AccessError(
            f"kubeconfig {path}: the cluster has no server URL (got {cfg.host!r}); fix its clusters[].cluster.server"
        )
    return client.ApiClient(cfg)


def describe_transport_error(exc: Exception, timeout: float | None = None) -> str:
    """What a urllib3 error means for the user: refused, unresolvable, timed out, TLS."""
    from urllib3 import exceptions as u3

    reason: Exception = exc.reason if isinstance(exc, u3.MaxRetryError) and exc.reason else exc
    if isinstance(reason, u3.NameResolutionError):
        return "cannot resolve the host name"
    if isinstance(reason, u3.SSLError):
        text = " ".join(str(reason.args[0] if reason.args else reason).split())
        return f"TLS error ({text}); check the server URL and certificate-authority in your kubeconfig"
    if isinstance(reason, u3.NewConnectionError):  # before timeouts: it subclasses ConnectTimeoutError
        if isinstance(reason.__cause__ or reason.__context__, ConnectionRefusedError) or "refused" in str(reason):
            return "connection refused"
        if not isinstance(reason.__cause__ or reason.__context__, TimeoutError):
            return " ".join(str(reason).split())
    if isinstance(reason, (u3.ConnectTimeoutError, u3.ReadTimeoutError, u3.TimeoutError)):
        return f"timed out after {timeout:g}s per try (--request-timeout)" if timeout else "timed out"
    if isinstance(reason, u3.ProtocolError):
        return f"connection broken ({' '.join(str(reason).split())})"
    return " ".join(str(reason).split()) or type(reason).__name__


class Kube:
    """The handful of API calls the controller makes, on plain dicts."""

    def __init__(self, api_client: Any, *, request_timeout: float | None = 30.0) -> None:
        from kubernetes import client
        from kubernetes.config.config_exception import ConfigException
        from urllib3.exceptions import HTTPError

        self._client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._api_exception = client.ApiException
        self._transport_errors = (HTTPError, ConfigException)  # ConfigException: credential refresh
        self.request_timeout = request_timeout

    def _call(self, what: str, permission: str, fn: Callable[..., Any], *args: Any) -> Any:
        """One API call; ``permission`` is the RBAC rule it needs, named in a 403's message."""
        try:
            result = fn(*args, _request_timeout=self.request_timeout)
        except self._api_exception as exc:
            raise from_api_exception(exc, what, permission) from exc
        except self._transport_errors as exc:
            host = self._client.configuration.host
            why = describe_transport_error(exc, self.request_timeout)
            raise AccessError(
                f"cannot reach the Kubernetes API at {host} ({what}): {why}; check that the cluster is up "
                "and that --kubeconfig/--context point at it"
            ) from exc
        if result is None or isinstance(result, dict):
            return result
        return self._client.sanitize_for_serialization(result)  # typed core models -> dict

    # ---- InferenceServices --------------------------------------------------------------------

    def get_isvc(self, namespace: str, name: str) -> Obj:
        return self._call(
            f"get inferenceservice {namespace}/{name}",
            _rbac("get", ISVC, namespace),
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
                "list inferenceservices",
                _rbac("list", ISVC, None),
                self._custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
            )
        else:
            result = self._call(
                f"list inferenceservices in {namespace}",
                _rbac("list", ISVC, namespace),
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
            _rbac("create", ISVC, namespace),
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
            _rbac("patch", ISVC, namespace),
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
        return self._call(
            f"get configmap {namespace}/{name}",
            _rbac("get", "configmaps", namespace),
            self._core.read_namespaced_config_map,
            name,
            namespace,
        )

    def create_configmap(self, namespace: str, body: Obj) -> Obj:
        return self._call(
            f"create configmap {namespace}/{body['metadata']['name']}",
            _rbac("create", "configmaps", namespace),
            self._core.create_namespaced_config_map,
            namespace,
            body,
        )

    def replace_configmap(self, namespace: str, name: str, body: Obj) -> Obj:
        """PUT with the read ``resourceVersion``: a concurrent writer makes this a 409."""
        return self._call(
            f"update configmap {namespace}/{name}",
            _rbac("update", "configmaps", namespace),
            self._core.replace_namespaced_config_map,
            name,
            namespace,
            body,
        )

    def create_event(self, namespace: str, body: Obj) -> None:
        """Best effort: an Event that cannot be written never fails a command."""
        with contextlib.suppress(ControllerError):
            self._call(
                "create event",
                _rbac("create", "events", namespace),
                self._core.create_namespaced_event,
                namespace,
                body,
            )


ISVC = f"{PLURAL}.{GROUP}"


def _rbac(verb: str, resource: str, namespace: str | None) -> str:
    """The RBAC rule a call needs, as a 403's message names it."""
    return f"{verb} {resource} " + (f"in namespace {namespace}" if namespace else "in all namespaces (a ClusterRole)")


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
