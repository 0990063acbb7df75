"""``run``: the rollout state machine as a reconcile loop, driven by annotations.

A user asks for a progressive rollout by annotating an InferenceService::

    maas.io/rollout-storage-uri: s3://models/m/3     # required: what to roll out
    maas.io/rollout-version: v3                      # optional version name
    maas.io/rollout-steps: "10,25,50,100"            # optional, as in `rollout --steps`
    maas.io/rollout-interval: 60s
    maas.io/rollout-max-error-rate: "0.01"
    maas.io/rollout-max-p99-ms: "250"

Each pass lists the InferenceServices (one namespace or all), and for each annotated one calls
``Rollout.tick`` once: nothing blocks, so one slow model never holds up the others. Progress is
kept in ``maas.io/rollout-state``; a rolled-back or cancelled rollout stays so until the
request annotation names another URI. Errors are logged and posted as Warning Events, then
the loop goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .commands import Controller, Settings
from .errors import ControllerError, ValidationError
from .kube import Clock, Kube
from .model import (
    ANN_ROLLOUT_INTERVAL,
    ANN_ROLLOUT_MAX_ERROR_RATE,
    ANN_ROLLOUT_MAX_P99_MS,
    ANN_ROLLOUT_STEPS,
    ANN_ROLLOUT_URI,
    ANN_ROLLOUT_VERSION,
    parse_duration,
    parse_steps,
)
from .prometheus import Prometheus
from .rollout import Rollout, RolloutPlan, Tick


def plan_from_annotations(annotations: dict[str, str], defaults: RolloutPlan) -> RolloutPlan:
    """The rollout an InferenceService asks for; ``defaults`` fill what it leaves out."""

    def number(key: str, default: float) -> float:
        try:
            return float(annotations.get(key, default))
        except ValueError:
            raise ValidationError(f"{key}: not a number: {annotations[key]!r}") from None

    thresholds = replace(
        defaults.thresholds,
        max_error_rate=number(ANN_ROLLOUT_MAX_ERROR_RATE, defaults.thresholds.max_error_rate),
        max_p99_ms=number(ANN_ROLLOUT_MAX_P99_MS, defaults.thresholds.max_p99_ms),
    )
    steps = annotations.get(ANN_ROLLOUT_STEPS)
    interval = annotations.get(ANN_ROLLOUT_INTERVAL)
    return replace(
        defaults,
        storage_uri=annotations[ANN_ROLLOUT_URI],
        version=annotations.get(ANN_ROLLOUT_VERSION) or None,
        steps=parse_steps(steps) if steps else defaults.steps,
        interval=parse_duration(interval) if interval else defaults.interval,
        thresholds=thresholds,
    )


@dataclass
class Reconciler:
    """Drives every annotated InferenceService one tick per pass."""

    kube: Kube
    settings: Settings
    defaults: RolloutPlan
    namespace: str | None  # None: all namespaces
    prometheus: Prometheus | None = None
    clock: Clock = field(default_factory=Clock)
    log: Callable[[str], None] = print
    _last: dict[tuple[str, str], str] = field(default_factory=dict)

    def reconcile_once(self) -> dict[tuple[str, str], Tick | ControllerError]:
        results: dict[tuple[str, str], Tick | ControllerError] = {}
        for isvc in self.kube.list_isvcs(self.namespace):
            meta = isvc["metadata"]
            annotations = meta.get("annotations") or {}
            if ANN_ROLLOUT_URI not in annotations:
                continue
            key = (meta["namespace"], meta["name"])
            results[key] = self._reconcile(isvc, annotations)
        return results

    def _reconcile(self, isvc: dict[str, Any], annotations: dict[str, str]) -> Tick | ControllerError:
        meta = isvc["metadata"]
        settings = replace(self.settings, namespace=meta["namespace"], wait=False)
        controller = Controller(self.kube, settings, clock=self.clock)
        key = (meta["namespace"], meta["name"])
        try:
            plan = plan_from_annotations(annotations, self.defaults)
            tick = Rollout(controller, self.prometheus).tick(meta["name"], plan)
        except ControllerError as exc:
            if self._changed(key, exc.message):
                self.log(f"{key[0]}/{key[1]}: error: {exc.message}")
                controller.event(isvc, "RolloutError", exc.message, kind="Warning")
            return exc
        if self._changed(key, tick.message):
            self.log(f"{key[0]}/{key[1]}: {tick.phase}: {tick.message}")
        return tick

    def _changed(self, key: tuple[str, str], message: str) -> bool:
        changed = self._last.get(key) != message
        self._last[key] = message
        return changed

    def run(self, interval: float, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Reconcile every ``interval`` seconds until ``should_stop()``; API errors never end it."""
        while not should_stop():
            try:
                self.reconcile_once()
            except ControllerError as exc:
                self.log(f"error: {exc.message}")
            if should_stop():
                return
            self.clock.sleep(interval)
