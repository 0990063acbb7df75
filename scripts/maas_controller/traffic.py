"""How a canary is written into an InferenceService, per KServe deployment mode.

Reading of KServe 0.21's InferenceService CRD (``serving.kserve.io/v1beta1``):

* The mode is the ``serving.kserve.io/deploymentMode`` annotation (``Serverless``, or
  ``Standard``, formerly ``RawDeployment``); KServe echoes it in ``status.deploymentMode``.
  Without either we fall back to a configurable default (``--default-mode``).
* **Knative (Serverless) mode**: the canary is one field, ``spec.predictor.canaryTrafficPercent``
  (int64). The predictor spec *is* the new version; Knative keeps the previous rolled-out
  revision (``status.components.predictor.previousRolledoutRevision``, traffic tag ``prev``) and
  sends it ``100 - P`` percent. So the stable URI is not in the spec while a canary runs: we keep
  it in the ``maas.io/stable-storage-uri`` annotation. ``status.components.predictor.traffic[]``
  lists ``{revisionName, percent, latestRevision, tag}``.
* **Standard (RawDeployment) mode**: ``spec.canary`` is an atomic list of
  ``{trafficPercent (int32, 0..100, required), predictor (a full PredictorSpec, required)}``;
  ``spec.predictor`` stays the stable version and receives ``100 - sum(trafficPercent)``.
  KServe reports each canary in ``status.canaryStatuses[] {name, ready, trafficPercent,
  modelStatus}``. maas uses a single canary entry: a copy of the stable predictor with the new
  ``model.storageUri`` (runtime, args and resources stay the same).

Promote and rollback are merge patches (``null`` deletes a field; lists are replaced whole).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError
from .model import (
    ANN_CANARY_VERSION,
    ANN_STABLE_URI,
    ANN_VERSION,
    DEPLOYMENT_MODE,
    Mode,
    Version,
)

Obj = dict[str, Any]


@dataclass(frozen=True)
class Split:
    """Which versions the spec asks for: a stable one and maybe a canary at ``percent``."""

    stable: Version
    canary: Version | None = None
    percent: int = 0

    def weights(self) -> dict[str, int]:
        """Version name -> percent of traffic; always sums to 100."""
        if self.canary is None:
            return {self.stable.name: 100}
        if self.canary.name == self.stable.name:
            return {self.stable.name: 100}
        return {self.stable.name: 100 - self.percent, self.canary.name: self.percent}


def detect_mode(isvc: Obj, default: Mode) -> Mode:
    annotations = isvc.get("metadata", {}).get("annotations") or {}
    declared = annotations.get(DEPLOYMENT_MODE) or isvc.get("status", {}).get("deploymentMode")
    if declared and declared.lower() == "modelmesh":
        raise ValidationError("ModelMesh InferenceServices have no canary; not supported")
    return Mode.parse(declared) if declared else default


def _model(predictor: Obj) -> Obj:
    return predictor.get("model") or {}


def read_split(isvc: Obj, mode: Mode) -> Split:
    """The live split as the spec and our annotations describe it (names may be empty)."""
    annotations = isvc.get("metadata", {}).get("annotations") or {}
    predictor = isvc.get("spec", {}).get("predictor") or {}
    spec_uri = _model(predictor).get("storageUri", "")
    canary_name = annotations.get(ANN_CANARY_VERSION, "")
    if mode is Mode.KNATIVE:
        percent = predictor.get("canaryTrafficPercent")
        if percent is None:
            return Split(Version(annotations.get(ANN_VERSION, ""), spec_uri))
        stable = Version(annotations.get(ANN_VERSION, ""), annotations.get(ANN_STABLE_URI, ""))
        return Split(stable, Version(canary_name, spec_uri), int(percent))
    stable = Version(annotations.get(ANN_VERSION, ""), spec_uri)
    canaries = isvc.get("spec", {}).get("canary") or []
    if not canaries:
        return Split(stable)
    if len(canaries) > 1:
        raise ValidationError("spec.canary has several entries; maas manages exactly one")
    entry = canaries[0]
    canary_uri = _model(entry.get("predictor") or {}).get("storageUri", "")
    return Split(stable, Version(canary_name, canary_uri), int(entry.get("trafficPercent", 0)))


def patch_for(isvc: Obj, mode: Mode, target: Split) -> Obj:
    """The merge patch that turns the live InferenceService into ``target``."""
    canary = target.canary
    annotations = {
        ANN_VERSION: target.stable.name,
        ANN_CANARY_VERSION: canary.name if canary else None,
        ANN_STABLE_URI: target.stable.storage_uri if canary and mode is Mode.KNATIVE else None,
    }
    if mode is Mode.KNATIVE:
        predictor = {
            "canaryTrafficPercent": target.percent if canary else None,
            "model": {"storageUri": (canary or target.stable).storage_uri},
        }
        spec: Obj = {"predictor": predictor}
    else:
        spec = {"predictor": {"model": {"storageUri": target.stable.storage_uri}}, "canary": None}
        if canary:
            base = copy.deepcopy(isvc.get("spec", {}).get("predictor") or {})
            base.pop("canaryTrafficPercent", None)
            base.setdefault("model", {})["storageUri"] = canary.storage_uri
            spec["canary"] = [{"trafficPercent": target.percent, "predictor": base}]
    return {"metadata": {"annotations": annotations}, "spec": spec}


def _conditions(isvc: Obj) -> dict[str, Obj]:
    return {c.get("type", ""): c for c in isvc.get("status", {}).get("conditions") or []}


def readiness(isvc: Obj, mode: Mode) -> tuple[bool, str]:
    """Ready means: status caught up with the spec, Ready=True, and the canary serving."""
    generation = isvc.get("metadata", {}).get("generation", 0)
    status = isvc.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is None or observed < generation:
        return False, f"status.observedGeneration {observed} < metadata.generation {generation}"
    ready = _conditions(isvc).get("Ready")
    if not ready or ready.get("status") != "True":
        detail = (ready or {}).get("message") or (ready or {}).get("reason") or "no condition"
        return False, f"Ready is not True ({detail})"
    split = read_split(isvc, mode)
    if split.canary is None:
        return True, "Ready"
    if mode is Mode.KNATIVE:
        component = status.get("components", {}).get("predictor", {})
        if component.get("latestReadyRevision") != component.get("latestCreatedRevision"):
            return False, "the canary revision is not ready yet"
    else:
        statuses = status.get("canaryStatuses") or []
        if not statuses or not all(s.get("ready") for s in statuses):
            return False, "the canary is not ready yet (status.canaryStatuses)"
    return True, "Ready"


def observed_traffic(isvc: Obj, mode: Mode) -> list[Obj]:
    """What KServe reports as routed: ``[{target, percent, role}]``."""
    status = isvc.get("status") or {}
    if mode is Mode.KNATIVE:
        entries = status.get("components", {}).get("predictor", {}).get("traffic") or []
        return [
            {
                "target": e.get("revisionName", ""),
                "percent": int(e.get("percent") or 0),
                "role": "latest" if e.get("latestRevision") else (e.get("tag") or ""),
            }
            for e in entries
        ]
    canaries = [
        {"target": c.get("name", ""), "percent": int(c.get("trafficPercent") or 0), "role": "canary"}
        for c in status.get("canaryStatuses") or []
    ]
    if not status:
        return []
    stable = 100 - sum(c["percent"] for c in canaries)
    return [{"target": f"{isvc['metadata']['name']}-predictor", "percent": stable, "role": "stable"}, *canaries]


def canary_target(isvc: Obj, mode: Mode) -> str:
    """The name KServe gives the canary's workload: Knative revision or canary component."""
    status = isvc.get("status") or {}
    if mode is Mode.KNATIVE:
        return status.get("components", {}).get("predictor", {}).get("latestCreatedRevision", "")
    statuses = status.get("canaryStatuses") or []
    return statuses[0].get("name", "") if statuses else ""
