"""Version history of one InferenceService, in a ConfigMap it owns.

The ConfigMap ``<isvc>-maas-history`` holds ``history.json`` (a list of entries, oldest first)
and ``evicted`` (how many of the oldest entries were dropped to stay under the bound).
Entries are only appended, each with the next ``seq``. An append is read-modify-write with the
read ``resourceVersion``; a concurrent writer turns our PUT into a 409, and we re-read and
append again, so two racing controllers never drop each other's entry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from .errors import NotFound, ValidationError
from .kube import Clock, Kube, retry_on_conflict
from .model import GROUP, VERSION, Version

DATA_KEY = "history.json"
MAX_BYTES = 512 * 1024  # a ConfigMap holds at most 1 MiB


@dataclass(frozen=True)
class Entry:
    """One thing that happened to a version."""

    seq: int
    version: str
    storageUri: str
    at: str
    command: str
    outcome: str  # one of OUTCOMES
    percent: int = 100  # the share of traffic this version has after the command
    detail: str = ""


# Outcomes after which the entry's version served 100% (a rollback target for `rollback`).
ROLLED_OUT = ("rolled-out", "promoted", "restored")
OUTCOMES = (*ROLLED_OUT, "canary", "rolled-back", "timed-out", "interrupted")


def configmap_name(isvc_name: str) -> str:
    return f"{isvc_name}-maas-history"


class History:
    """Read and append the history of ``isvc`` (a dict as read from the API)."""

    def __init__(self, kube: Kube, isvc: dict[str, Any], *, limit: int = 200, clock: Clock | None = None) -> None:
        self.kube, self.isvc, self.limit = kube, isvc, limit
        self.clock = clock or Clock()
        self.namespace = isvc["metadata"]["namespace"]
        self.name = configmap_name(isvc["metadata"]["name"])

    def _read(self) -> tuple[dict[str, Any] | None, list[Entry], int]:
        try:
            cm = self.kube.get_configmap(self.namespace, self.name)
        except NotFound:
            return None, [], 0
        data = cm.get("data") or {}
        entries = [Entry(**e) for e in json.loads(data.get(DATA_KEY) or "[]")]
        return cm, entries, int(data.get("evicted") or 0)

    def entries(self) -> list[Entry]:
        return self._read()[1]

    def versions(self) -> dict[str, str]:
        """Every version recorded, name -> storage URI."""
        return {e.version: e.storageUri for e in self.entries()}

    def resolve(self, version: str) -> Version:
        """A recorded version by name; an unknown one is a ValidationError."""
        uri = self.versions().get(version)
        if uri is None:
            known = ", ".join(sorted(self.versions())) or "none"
            raise ValidationError(f"unknown version {version!r} (known: {known})")
        return Version(version, uri)

    def previous_stable(self, current: str) -> Version:
        """The last version other than ``current`` that served all traffic."""
        for entry in reversed(self.entries()):
            if entry.outcome in ROLLED_OUT and entry.version != current:
                return Version(entry.version, entry.storageUri)
        raise ValidationError(f"no earlier version than {current!r} in the history")

    def append(self, version: Version, command: str, outcome: str, *, percent: int = 100, detail: str = "") -> Entry:
        """Append one entry, retrying on 409 until it lands after everyone else's."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        return retry_on_conflict(
            lambda: self._append_once(version, command, outcome, percent, detail), clock=self.clock
        )

    def _append_once(self, version: Version, command: str, outcome: str, percent: int, detail: str) -> Entry:
        cm, entries, evicted = self._read()
        entry = Entry(
            seq=entries[-1].seq + 1 if entries else evicted + 1,
            version=version.name,
            storageUri=version.storage_uri,
            at=self.clock.iso(),
            command=command,
            outcome=outcome,
            percent=percent,
            detail=detail,
        )
        entries.append(entry)
        while len(entries) > self.limit or (len(entries) > 1 and len(_dump(entries)) > MAX_BYTES):
            entries.pop(0)
            evicted += 1
        data = {DATA_KEY: _dump(entries), "evicted": str(evicted)}
        if cm is None:
            self.kube.create_configmap(self.namespace, self._new_configmap(data))
        else:
            cm["data"] = data
            self.kube.replace_configmap(self.namespace, self.name, cm)
        return entry

    def _new_configmap(self, data: dict[str, str]) -> dict[str, Any]:
        meta = self.isvc["metadata"]
        owner = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceService",
            "name": meta["name"],
            "uid": meta.get("uid", ""),
        }
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "maas-controller", "maas.io/inferenceservice": meta["name"]},
                "ownerReferences": [owner] if owner["uid"] else [],
            },
            "data": data,
        }


def _dump(entries: list[Entry]) -> str:
    return json.dumps([asdict(e) for e in entries], separators=(",", ":"))
