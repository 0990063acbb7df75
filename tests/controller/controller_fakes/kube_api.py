"""TEST SCAFFOLDING: a small, stateful fake Kubernetes API server over HTTP on 127.0.0.1.

It implements just the verbs the controller uses, with the semantics that matter to it:

* GET (object and list, namespaced and cluster-wide), POST, PUT, PATCH, DELETE;
* ``application/merge-patch+json`` (RFC 7386, ``null`` deletes), ``application/json-patch+json``
  (RFC 6902: add/remove/replace/test) and strategic-merge (treated as a merge patch);
* ``metadata.resourceVersion`` from one global counter; a PUT or PATCH that carries a stale
  ``resourceVersion`` is answered 409 Conflict, a POST of an existing name 409 AlreadyExists;
* ``metadata.generation`` bumped only when ``spec`` changes; ``status`` of custom objects is
  ignored on the main resource (the status subresource is enabled, as for InferenceServices);
* Kubernetes ``Status`` error bodies (404 NotFound, 409 Conflict/AlreadyExists, 422 Invalid).

kmock 0.8's ``KubernetesEmulator`` was considered: it keeps objects but has no
``resourceVersion``, no optimistic-concurrency conflicts, no JSON patch and no ``generation``,
which are exactly what the controller's tests need, hence this small server.

* the minimal API discovery ``kubectl`` needs (``/version``, ``/api``, ``/apis``, ``/api/v1``,
  ``/apis/serving.kserve.io[/v1beta1]``, with the ``isvc`` short name), so the README's
  ``kubectl annotate isvc ...`` runs against it (``tests/controller/test_controller_readme.py``).

Tests may also inject faults (``fail_next``) and observe every request (``requests``).
``FakeKServe`` below stands in for the KServe controller's status updates.
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

from .http import JsonServer

Key = tuple[str, str, str]  # (resource path prefix, namespace, name)

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)


class HttpError(Exception):
    """An error answered as a Kubernetes ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "test":
            current = node[int(last)] if isinstance(node, list) else node.get(last)
            if current != op["value"]:
                raise HttpError(422, "Invalid", f"test failed at {op['path']}")
        elif op["op"] == "remove":
            if isinstance(node, list):
                node.pop(int(last))
            else:
                node.pop(last)
        elif isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] == "add":
                node.insert(index, op["value"])
            else:
                node[index] = op["value"]
        else:
            if op["op"] == "replace" and last not in node:
                raise HttpError(422, "Invalid", f"no value at {op['path']}")
            node[last] = op["value"]
    return doc


def _resource(plural: str, kind: str, short: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind, "verbs": verbs,
            **({"shortNames": short} if short else {})}  # fmt: skip


_VERBS = ["create", "delete", "get", "list", "patch", "update"]
_KSERVE = {"groupVersion": "serving.kserve.io/v1beta1", "version": "v1beta1"}
DISCOVERY: dict[str, dict[str, Any]] = {
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{"name": "serving.kserve.io", "versions": [_KSERVE], "preferredVersion": _KSERVE}],
    },
    "/apis/serving.kserve.io": {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": "serving.kserve.io",
        "versions": [_KSERVE],
        "preferredVersion": _KSERVE,
    },
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            _resource("configmaps", "ConfigMap", ["cm"], _VERBS),
            _resource("events", "Event", ["ev"], _VERBS),
        ],
    },
    "/apis/serving.kserve.io/v1beta1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "serving.kserve.io/v1beta1",
        "resources": [
            _resource("inferenceservices", "InferenceService", ["isvc"], _VERBS),
            {
                "name": "inferenceservices/status",
                "singularName": "",
                "namespaced": True,
                "kind": "InferenceService",
                "verbs": ["get", "patch", "update"],
            },
        ],
    },
}


@dataclass
class Request:
    """One request as the fake server saw it."""

    method: str
    path: str
    content_type: str
    body: Any


@dataclass
class FakeApiServer(JsonServer):
    """The store and the HTTP server (see the module docstring)."""

    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    on_read: list[Callable[[FakeApiServer, Key], None]] = field(default_factory=list)
    _faults: list[tuple[str, str, HttpError]] = field(default_factory=list)
    _rv: itertools.count = field(default_factory=lambda: itertools.count(1))
    lock: threading.RLock = field(default_factory=threading.RLock)

    def respond(self, method: str, path: str, content_type: str, body: Any) -> tuple[int, Any]:
        try:
            return self.handle(method, path, content_type, body)
        except HttpError as exc:
            return exc.code, status_body(exc)

    # ---- test helpers -------------------------------------------------------------------------

    def fail_next(self, method: str, path_part: str, code: int = 409, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``method`` whose path contains ``path_part``."""
        reason = {
            401: "Unauthorized",
            403: "Forbidden",
            404: "NotFound",
            409: "Conflict",
            422: "Invalid",
            500: "InternalError",
        }
        for _ in range(times):
            error = HttpError(code, reason.get(code, "Error"), f"injected {code}")
            self._faults.append((method, path_part, error))

    def get(self, prefix: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((prefix, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def put_status(self, key: Key, status: dict[str, Any]) -> None:
        """Write an object's status as a controller would (bumps resourceVersion)."""
        with self.lock:
            obj = self.objects[key]
            obj["status"] = status
            obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def writes(self, path_part: str = "") -> list[Request]:
        return [r for r in self.requests if r.method != "GET" and path_part in r.path]

    # ---- request handling ---------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, ctype: str, body: Any) -> tuple[int, Any]:
        url = urlparse(raw_path)
        with self.lock:
            self.requests.append(Request(method, url.path, ctype, body))
            for fault in self._faults:
                if fault[0] == method and fault[1] in url.path:
                    self._faults.remove(fault)
                    raise fault[2]
        if method == "GET" and url.path.rstrip("/") in DISCOVERY:
            return 200, copy.deepcopy(DISCOVERY[url.path.rstrip("/")])
        match = _PATH.match(url.path)
        if not match:
            raise HttpError(404, "NotFound", f"no route for {url.path}")
        m = match.groupdict()
        prefix = f"/api/v1/{m['plural']}" if m["core"] else (f"/apis/{m['group']}/{m['version']}/{m['plural']}")
        custom = not m["core"]
        ns, name = m["ns"], m["name"]
        with self.lock:
            if method == "GET" and name is None:
                query = parse_qs(url.query)
                return 200, self._list(prefix, ns, query.get("labelSelector", [""])[0])
            if method == "POST":
                return 201, self._create(prefix, ns or "", body)
            key = (prefix, ns or "", name or "")
            if key not in self.objects:
                raise HttpError(404, "NotFound", f'{m["plural"]} "{name}" not found')
            if method == "GET":
                for hook in self.on_read:
                    hook(self, key)
                return 200, copy.deepcopy(self.objects[key])
            if method == "DELETE":
                return 200, self.objects.pop(key)
            current = self.objects[key]
            if method == "PUT":
                new = copy.deepcopy(body)
            elif "json-patch" in ctype:
                new = json_patch(current, body)
            else:
                new = merge_patch(current, body)
            return 200, self._update(key, current, new, custom, m["sub"] == "status")

    def _list(self, prefix: str, ns: str | None, selector: str) -> dict[str, Any]:
        wanted = dict(p.split("=", 1) for p in selector.split(",") if "=" in p)
        items = [
            copy.deepcopy(obj)
            for (p, n, _), obj in sorted(self.objects.items())
            if p == prefix
            and (ns is None or n == ns)
            and all(obj["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        return {"kind": "List", "metadata": {"resourceVersion": str(next(self._rv))}, "items": items}

    def _create(self, prefix: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise HttpError(422, "Invalid", "metadata.name: Required value")
        key = (prefix, ns or meta.get("namespace", ""), name)
        if key in self.objects:
            raise HttpError(409, "AlreadyExists", f'"{name}" already exists')
        meta.update(
            namespace=key[1],
            uid=str(uuid.uuid4()),
            generation=1,
            resourceVersion=str(next(self._rv)),
            creationTimestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        if prefix.startswith("/apis/"):
            body.pop("status", None)
        self.objects[key] = body
        return copy.deepcopy(body)

    def _update(
        self, key: Key, current: dict[str, Any], new: dict[str, Any], custom: bool, status_only: bool
    ) -> dict[str, Any]:
        meta = new.setdefault("metadata", {})
        sent_rv = meta.get("resourceVersion")
        live_rv = current["metadata"]["resourceVersion"]
        if sent_rv and sent_rv != live_rv:
            raise HttpError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on "{key[2]}": the '
                "object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        for immutable in ("uid", "namespace", "name", "creationTimestamp", "generation"):
            if immutable in current["metadata"]:
                meta[immutable] = current["metadata"][immutable]
        if custom and not status_only and "status" in current:
            new["status"] = current["status"]
        elif custom and not status_only:
            new.pop("status", None)
        if new.get("spec") != current.get("spec"):
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        meta["resourceVersion"] = live_rv
        if new == current:
            return copy.deepcopy(current)  # a no-op write keeps its resourceVersion
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[key] = new
        return copy.deepcopy(new)


def write_kubeconfig(path: Any, server: str) -> str:
    """A kubeconfig at ``path`` whose current context talks to ``server`` with a token."""
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def api_client(url: str) -> Any:
    """An official-client ``ApiClient`` talking to the fake server at ``url``."""
    from kubernetes import client

    return client.ApiClient(client.Configuration(host=url))


def status_body(exc: HttpError) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": exc.message,
        "reason": exc.reason,
        "code": exc.code,
    }
