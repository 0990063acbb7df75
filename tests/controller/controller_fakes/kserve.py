"""TEST SCAFFOLDING: a fake of the KServe controller's status updates.

``FakeKServe`` hooks into ``fake_kube_api.FakeApiServer``: when an InferenceService whose spec
changed has been read ``lag`` times, it writes the status KServe would (so the controller sees
a stale ``observedGeneration`` first and must wait). In Knative mode it makes a revision per
predictor change and splits traffic between the latest and the previous rolled-out revision;
in Standard mode it reports ``status.canaryStatuses``. URIs in ``broken_uris`` never become Ready.
It is not part of the product.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .kube_api import FakeApiServer, Key

ISVC = "/apis/serving.kserve.io/v1beta1/inferenceservices"
CONFIGMAPS = "/api/v1/configmaps"
NS = "models"


@dataclass
class FakeKServe:
    lag: int = 1
    broken_uris: set[str] = field(default_factory=set)
    _reads: dict[tuple[Key, int], int] = field(default_factory=dict)
    _revisions: dict[Key, list[tuple[str, str, str]]] = field(default_factory=dict)
    _rolled: dict[Key, tuple[str | None, str | None]] = field(default_factory=dict)

    def install(self, server: FakeApiServer) -> FakeKServe:
        server.on_read.append(self.on_read)
        return self

    def on_read(self, server: FakeApiServer, key: Key) -> None:
        if key[0] != ISVC:
            return
        obj = server.objects[key]
        generation = obj["metadata"]["generation"]
        if (obj.get("status") or {}).get("observedGeneration") == generation:
            return
        seen = self._reads.get((key, generation), 0)
        if seen < self.lag:
            self._reads[(key, generation)] = seen + 1
            return
        mode = obj["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode", "Serverless")
        status = self._knative(key, obj) if mode == "Serverless" else self._standard(key, obj)
        status.update(observedGeneration=generation, deploymentMode=mode, url=f"http://{key[2]}.{key[1]}.example.com")
        server.put_status(key, status)

    def _ready(self, ok: bool) -> list[dict[str, Any]]:
        return [
            {
                "type": "Ready",
                "status": "True" if ok else "False",
                **({} if ok else {"reason": "RevisionFailed", "message": "model failed"}),
            }
        ]

    def _knative(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        predictor = dict(obj["spec"]["predictor"])
        percent = predictor.pop("canaryTrafficPercent", None)
        uri = predictor["model"]["storageUri"]
        config = json.dumps(predictor, sort_keys=True)
        revisions = self._revisions.setdefault(key, [])
        if not revisions or revisions[-1][1] != config:
            revisions.append((f"{key[2]}-predictor-{len(revisions) + 1:05d}", config, uri))
        latest = revisions[-1][0]
        ready = uri not in self.broken_uris
        rolled, previous = self._rolled.get(key, (None, None))
        if percent is None and ready and rolled != latest:
            rolled, previous = latest, rolled
            self._rolled[key] = (rolled, previous)
        if percent is None or rolled is None or rolled == latest:
            traffic = [
                {"revisionName": rolled or latest, "percent": 100, "latestRevision": (rolled or latest) == latest}
            ]
        else:
            traffic = [
                {"revisionName": latest, "percent": percent, "latestRevision": True, "tag": "latest"},
                {"revisionName": rolled, "percent": 100 - percent, "latestRevision": False, "tag": "prev"},
            ]
        ready_revision = latest if ready else rolled
        return {
            "conditions": self._ready(ready),
            "components": {
                "predictor": {
                    "latestCreatedRevision": latest,
                    "latestReadyRevision": ready_revision,
                    "latestRolledoutRevision": rolled,
                    "previousRolledoutRevision": previous,
                    "traffic": traffic,
                }
            },
        }

    def _standard(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        stable_ok = obj["spec"]["predictor"]["model"]["storageUri"] not in self.broken_uris
        statuses = [
            {
                "name": f"{key[2]}-predictor-canary",
                "trafficPercent": c["trafficPercent"],
                "ready": c["predictor"]["model"]["storageUri"] not in self.broken_uris,
            }
            for c in obj["spec"].get("canary") or []
        ]
        ok = stable_ok and all(s["ready"] for s in statuses)
        return {
            "conditions": self._ready(ok),
            "canaryStatuses": statuses,
            "components": {"predictor": {"url": f"http://{key[2]}-predictor"}},
        }
