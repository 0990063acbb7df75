"""deploy, canary, promote, rollback, status and history: each compares, patches, waits, records.

Every mutating command goes through ``Controller.apply``: read the InferenceService, compute the
target ``Split``, do nothing if the live one already matches (re-running is a no-op), otherwise
send one merge patch that carries the read ``resourceVersion`` (a concurrent writer makes it a
409, and we re-read and recompute), wait for Ready with ``observedGeneration`` caught up, and
append what happened to the history.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import Conflict, NotFound, ValidationError, WaitTimeout
from .history import History
from .kube import Clock, Kube, retry_on_conflict, wait_until
from .model import (
    ANN_ROLLOUT_STATE,
    ANN_VERSION,
    DEPLOYMENT_MODE,
    GROUP,
    MODEL_FORMATS,
    VERSION,
    Mode,
    Version,
    validate_percent,
    validate_uri,
    validate_version,
)
from .traffic import Split, detect_mode, observed_traffic, patch_for, read_split, readiness

Obj = dict[str, Any]
Plan = Callable[[Obj, Split, History], Split]


@dataclass(frozen=True)
class Settings:
    """Options shared by every command, parsed once by the CLI."""

    namespace: str = "default"
    default_mode: Mode = Mode.KNATIVE
    timeout: float = 600.0  # seconds to wait for Ready after a change
    poll: float = 2.0  # seconds between reads while waiting
    wait: bool = True
    history_limit: int = 200


@dataclass
class Result:
    """What a command did, for the CLI to print."""

    name: str
    command: str
    changed: bool
    message: str
    traffic: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> Obj:
        return {
            "name": self.name,
            "command": self.command,
            "changed": self.changed,
            "message": self.message,
            "traffic": self.traffic,
        }


def describe(command: str, live: Split, target: Split) -> tuple[Version, str, int, str]:
    """The history entry for moving from ``live`` to ``target``: version, outcome, %, detail."""
    if target.canary is not None:
        return target.canary, "canary", target.percent, f"stable {target.stable.name}"
    if live.canary is not None and target.stable == live.canary:
        return target.stable, "promoted", 100, f"replaces {live.stable.name}"
    if live.canary is not None and target.stable == live.stable:
        return live.canary, "rolled-back", 0, f"back to {live.stable.name}"
    if command == "rollback":
        return target.stable, "restored", 100, f"replaces {live.stable.name}"
    return target.stable, "rolled-out", 100, (f"replaces {live.stable.name}" if live.stable.name else "")


class Controller:
    """The version controller for InferenceServices in one namespace."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings or Settings()
        self.clock = clock or Clock()
        self.log = log or (lambda message: None)

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    # ---- reading ------------------------------------------------------------------------------

    def read(self, name: str) -> tuple[Obj, Mode, Split, History]:
        """The live object, its mode, its split (versions named) and its history."""
        isvc = self.kube.get_isvc(self.namespace, name)
        mode = detect_mode(isvc, self.settings.default_mode)
        history = History(self.kube, isvc, limit=self.settings.history_limit, clock=self.clock)
        return isvc, mode, name_versions(read_split(isvc, mode), history), history

    def status(self, name: str) -> Obj:
        isvc, mode, split, _ = self.read(name)
        ready, reason = readiness(isvc, mode)
        meta, status = isvc["metadata"], isvc.get("status") or {}
        weights = split.weights()

        def version(v: Version | None) -> Obj | None:
            if v is None:
                return None
            return {"version": v.name, "storageUri": v.storage_uri, "percent": weights.get(v.name, 0)}

        return {
            "name": name,
            "namespace": self.namespace,
            "mode": mode.value,
            "ready": ready,
            "reason": reason,
            "url": status.get("url", ""),
            "generation": meta.get("generation"),
            "observedGeneration": status.get("observedGeneration"),
            "stable": version(split.stable),
            "canary": version(split.canary),
            "traffic": observed_traffic(isvc, mode),
        }

    def history(self, name: str) -> list[Obj]:
        _, _, _, history = self.read(name)
        return [vars(entry) for entry in history.entries()]

    # ---- commands -----------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        storage_uri: str,
        version: str | None = None,
        *,
        model_format: str | None = None,
        runtime: str | None = None,
        mode: Mode | None = None,
    ) -> Result:
        """Create the InferenceService, or roll ``storage_uri`` out at 100%."""
        validate_uri(storage_uri)
        if version is not None:
            validate_version(version)
        if model_format is not None and model_format not in MODEL_FORMATS:
            raise ValidationError(f"unknown model format {model_format!r}: one of " + ", ".join(MODEL_FORMATS))
        try:
            self.kube.get_isvc(self.namespace, name)
        except NotFound:
            if model_format is None:
                raise NotFound(
                    f"InferenceService {self.namespace}/{name} does not exist; pass --model-format to create it"
                ) from None
            return self._create(name, Version(version or "v1", storage_uri), model_format, runtime, mode)

        def plan(isvc: Obj, live: Split, history: History) -> Split:
            return Split(new_version(history, live, storage_uri, version))

        return self.apply(name, "deploy", plan)

    def canary(self, name: str, storage_uri: str, percent: int, version: str | None = None) -> Result:
        """Route ``percent`` of the traffic to a new version."""
        validate_uri(storage_uri)
        validate_percent(percent)
        if version is not None:
            validate_version(version)

        def plan(isvc: Obj, live: Split, history: History) -> Split:
            if storage_uri == live.stable.storage_uri:
                raise ValidationError(f"{storage_uri} is already the stable version {live.stable.name}")
            new = new_version(history, live, storage_uri, version)
            if live.canary is not None and live.canary != new:
                raise Conflict(f"canary {live.canary.name} is in progress; promote or roll it back first")
            return Split(live.stable, new, percent)

        return self.apply(name, "canary", plan)

    def promote(self, name: str) -> Result:
        """Send all traffic to the canary and make it the stable version."""
        return self.apply(name, "promote", lambda isvc, live, history: Split(live.canary or live.stable))

    def rollback(self, name: str, to: str | None = None) -> Result:
        """Drop the canary, or go back to the previous (or any recorded) version."""
        if to is not None:
            validate_version(to)

        def plan(isvc: Obj, live: Split, history: History) -> Split:
            if to is not None:
                known = {live.stable.name: live.stable.storage_uri}
                return Split(Version(to, known[to]) if to in known else history.resolve(to))
            if live.canary is not None:
                return Split(live.stable)
            return Split(history.previous_stable(live.stable.name))

        return self.apply(name, "rollback", plan)

    # ---- the shared machinery ------------------------------------------------------------------

    def apply(
        self,
        name: str,
        command: str,
        plan: Plan,
        *,
        annotations: dict[str, str | None] | None = None,
        wait: bool | None = None,
        detail: str | None = None,
    ) -> Result:
        """Compare, patch (conditionally, retrying 409s), wait for Ready, record.

        ``annotations`` ride along in the same patch (the rollout state); ``wait=False`` records
        at once instead of waiting; ``detail`` overrides the history entry's detail.
        """
        wait = self.settings.wait if wait is None else wait

        def attempt() -> tuple[Obj, Mode, Split, Split, History, bool]:
            isvc, mode, live, history = self.read(name)
            target = plan(isvc, live, history)
            live_annotations = isvc["metadata"].get("annotations") or {}
            extra = annotations or {}
            if command != "rollout" and target != live:
                extra = cancel_rollout(live_annotations, command)
            if target == live and all(live_annotations.get(k) == v for k, v in extra.items()):
                return isvc, mode, live, target, history, False
            patch = patch_for(isvc, mode, target)
            patch["metadata"]["annotations"].update(extra)
            patch["metadata"]["resourceVersion"] = isvc["metadata"]["resourceVersion"]
            isvc = self.kube.patch_isvc(self.namespace, name, patch)
            return isvc, mode, live, target, history, True

        isvc, mode, live, target, history, changed = retry_on_conflict(attempt, clock=self.clock)
        if target == live:
            if wait:
                self.wait_ready(name, mode)
            message = f"{name}: no change, {format_weights(target)}"
            return Result(name, command, changed, message, target.weights())
        version, outcome, percent, default_detail = describe(command, live, target)
        entry = (version, outcome, percent, default_detail if detail is None else detail)
        return self._finish(name, command, isvc, mode, history, target, entry, wait=wait)

    def _finish(
        self,
        name: str,
        command: str,
        isvc: Obj,
        mode: Mode,
        history: History,
        target: Split,
        entry: tuple[Version, str, int, str],
        *,
        wait: bool = True,
    ) -> Result:
        """Wait for Ready after a change, then record it (or its timeout) and post an Event."""
        version, outcome, percent, detail = entry
        self.log(f"{name}: {command}: {outcome} {version.name} ({version.storage_uri})")
        try:
            if wait:
                self.wait_ready(name, mode)
        except WaitTimeout as exc:
            history.append(version, command, "timed-out", percent=percent, detail=exc.message)
            raise
        except KeyboardInterrupt:
            history.append(version, command, "interrupted", percent=percent, detail=detail)
            raise
        history.append(version, command, outcome, percent=percent, detail=detail)
        message = f"{name}: {outcome} {version.name}, {format_weights(target)}"
        self.event(isvc, command, message)
        return Result(name, command, True, message, target.weights())

    def wait_ready(self, name: str, mode: Mode) -> Obj:
        return wait_until(
            lambda: self.kube.get_isvc(self.namespace, name),
            lambda obj: readiness(obj, mode),
            timeout=self.settings.timeout,
            poll=self.settings.poll,
            clock=self.clock,
            what=f"InferenceService {self.namespace}/{name} to be Ready",
        )

    def event(self, isvc: Obj, reason: str, message: str, kind: str = "Normal") -> None:
        meta = isvc["metadata"]
        now = self.clock.iso()
        self.kube.create_event(
            self.namespace,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": self.namespace},
                "involvedObject": {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "InferenceService",
                    "name": meta["name"],
                    "namespace": self.namespace,
                    "uid": meta.get("uid", ""),
                },
                "reason": reason.capitalize(),
                "message": message,
                "type": kind,
                "source": {"component": "maas-controller"},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )

    def _create(self, name: str, version: Version, model_format: str, runtime: str | None, mode: Mode | None) -> Result:
        annotations = {ANN_VERSION: version.name}
        if mode is not None:
            annotations[DEPLOYMENT_MODE] = mode.value
        model: Obj = {"modelFormat": {"name": model_format}, "storageUri": version.storage_uri}
        if runtime:
            model["runtime"] = runtime
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": self.namespace, "annotations": annotations},
            "spec": {"predictor": {"model": model}},
        }
        try:
            self.kube.create_isvc(self.namespace, body)
        except Conflict:  # created meanwhile by someone else: roll the version out instead
            return self.deploy(name, version.storage_uri, version.name)
        isvc, mode, split, history = self.read(name)
        return self._finish(
            name, "deploy", isvc, mode, history, split, (version, "rolled-out", 100, "created"), wait=self.settings.wait
        )


def cancel_rollout(annotations: dict[str, str], command: str) -> dict[str, str | None]:
    """A manual change cancels a progressing rollout, so `run` does not undo it."""
    try:
        state = json.loads(annotations.get(ANN_ROLLOUT_STATE) or "{}")
    except ValueError:
        state = {}
    if state.get("phase") != "progressing":
        return {}
    state.update(phase="cancelled", reason=f"cancelled by {command}")
    return {ANN_ROLLOUT_STATE: json.dumps(state, separators=(",", ":"))}


def name_versions(split: Split, history: History) -> Split:
    """Give unnamed live versions (an InferenceService made outside maas) a name."""
    if split.stable.name and (split.canary is None or split.canary.name):
        return split
    by_uri = {uri: name for name, uri in history.versions().items()}

    def named(v: Version, fallback: str) -> Version:
        return v if v.name else Version(by_uri.get(v.storage_uri, fallback), v.storage_uri)

    canary = named(split.canary, "canary") if split.canary else None
    return Split(named(split.stable, "initial"), canary, split.percent)


def new_version(history: History, live: Split, uri: str, requested: str | None) -> Version:
    """The version for ``uri``: as requested, as recorded for that URI, or the next ``vN``."""
    known = history.versions()
    for v in (live.stable, live.canary):
        if v is not None:
            known[v.name] = v.storage_uri
    if requested is not None:
        if known.get(requested, uri) != uri:
            raise ValidationError(f"version {requested!r} already names {known[requested]}")
        return Version(requested, uri)
    for name, known_uri in reversed(list(known.items())):
        if known_uri == uri:
            return Version(name, uri)
    numbers = [int(n[1:]) for n in known if re.fullmatch(r"v\d+", n)]
    return Version(f"v{max(numbers, default=0) + 1}", uri)


def format_weights(split: Split) -> str:
    return ", ".join(f"{name} {pct}%" for name, pct in split.weights().items())
