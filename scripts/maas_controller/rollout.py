"""Progressive delivery: canary steps gated on readiness and Prometheus health.

A rollout is a small state machine advanced by ``Rollout.tick``, which never blocks: each call
reads the InferenceService, does at most one transition and returns what it saw. The state
lives in the ``maas.io/rollout-state`` annotation and is written in the same conditional patch
as the traffic change it describes, so an interrupted ``rollout`` (or a restarted ``run``)
resumes at the step it reached. A step is: apply the percent, wait for Ready (at most
``ready_timeout``), observe for ``interval`` from the moment it was Ready, then judge the
canary's error rate and p99; healthy advances (the last step, 100, promotes), unhealthy rolls
back to the stable version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .commands import Controller, new_version
from .errors import Conflict, RolledBack, ValidationError
from .model import ANN_ROLLOUT_STATE, Mode, Version, parse_steps, validate_uri, validate_version
from .prometheus import DEFAULT_SELECTOR, Prometheus, PrometheusError, Thresholds
from .traffic import Split, canary_target, readiness

PROGRESSING, SUCCEEDED, ROLLED_BACK = "progressing", "succeeded", "rolled-back"
CANCELLED = "cancelled"  # a manual command took over (see commands.cancel_rollout)


@dataclass(frozen=True)
class RolloutPlan:
    """What to roll out and how carefully."""

    storage_uri: str
    version: str | None = None
    steps: tuple[int, ...] = (10, 25, 50, 100)
    interval: float = 60.0  # seconds to observe each step once Ready
    thresholds: Thresholds = field(default_factory=Thresholds)
    ready_timeout: float = 600.0
    selector: str = DEFAULT_SELECTOR
    window: str = ""  # PromQL range; default max(interval, 60s)

    def __post_init__(self) -> None:
        validate_uri(self.storage_uri)
        if self.version is not None:
            validate_version(self.version)
        parse_steps(",".join(map(str, self.steps)))
        if not 0 <= self.thresholds.max_error_rate <= 1 or self.thresholds.max_p99_ms <= 0:
            raise ValidationError("max error rate must be in 0..1 and max p99 positive")
        try:
            self.selector.format(namespace="", name="", target="", version="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValidationError(f"bad canary selector template: {exc}") from None

    @property
    def range(self) -> str:
        return self.window or f"{int(max(self.interval, 60))}s"


@dataclass(frozen=True)
class RolloutState:
    """The JSON kept in the ``maas.io/rollout-state`` annotation."""

    version: str
    storageUri: str
    steps: list[int]
    step: int
    since: float  # when the current step was applied
    readyAt: float | None = None
    phase: str = PROGRESSING
    reason: str = ""

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, text: str | None) -> RolloutState | None:
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError):
            return None  # a hand-edited or foreign value: start over rather than crash

    @property
    def percent(self) -> int:
        return self.steps[self.step]

    @property
    def label(self) -> str:
        return f"step {self.step + 1}/{len(self.steps)} ({self.percent}%)"


@dataclass(frozen=True)
class Tick:
    """What one ``tick`` did or saw."""

    phase: str
    message: str
    percent: int = 0
    changed: bool = False

    @property
    def done(self) -> bool:
        return self.phase in (SUCCEEDED, ROLLED_BACK, CANCELLED)


class Rollout:
    """Runs ``RolloutPlan``s against one namespace's InferenceServices."""

    def __init__(self, controller: Controller, prometheus: Prometheus | None = None) -> None:
        self.ctl = controller
        self.prometheus = prometheus

    def run(
        self, name: str, plan: RolloutPlan, *, poll: float, report: Callable[[Tick], None] = lambda tick: None
    ) -> Tick:
        """Tick until done, reporting each new message; raise RolledBack if it failed."""
        last = ""
        while True:
            tick = self.tick(name, plan, restart_failed=not last)
            if tick.message != last:
                report(tick)
                last = tick.message
            if tick.phase in (ROLLED_BACK, CANCELLED):
                raise RolledBack(f"{name}: rollout rolled back: {tick.message}")
            if tick.done:
                return tick
            self.ctl.clock.sleep(poll)

    def tick(self, name: str, plan: RolloutPlan, *, restart_failed: bool = False) -> Tick:
        """One non-blocking step of the state machine."""
        isvc, mode, live, history = self.ctl.read(name)
        annotations = isvc["metadata"].get("annotations") or {}
        state = RolloutState.load(annotations.get(ANN_ROLLOUT_STATE))
        if state is not None and state.storageUri != plan.storage_uri:
            state = None
        if state is not None and state.phase != PROGRESSING:
            if state.phase == SUCCEEDED or not restart_failed:
                return Tick(state.phase, f"{state.version}: {state.phase} {state.reason}".strip())
            state = None
        if state is None:
            if live.canary is None and live.stable.storage_uri == plan.storage_uri:
                return Tick(SUCCEEDED, f"{live.stable.name} already serves 100%", 100)
            version = new_version(history, live, plan.storage_uri, plan.version)
            if live.canary is not None and live.canary != version:
                raise Conflict(f"canary {live.canary.name} is in progress; promote or roll it back first")
            # A canary of this version already live (a manual `canary`): continue from its share.
            first = next(i for i, p in enumerate(plan.steps) if live.canary != version or p >= live.percent)
            start = RolloutState(version.name, version.storage_uri, list(plan.steps), first, self.ctl.clock.now())
            return self._go(name, live.stable, version, start, f"started: {start.label}")

        now = self.ctl.clock.now()
        canary = Version(state.version, state.storageUri)
        ready, reason = readiness(isvc, mode)
        if not ready:
            if now - state.since > plan.ready_timeout:
                return self._abort(name, canary, state, f"not Ready after {plan.ready_timeout:g}s: {reason}")
            return Tick(PROGRESSING, f"{state.label}: waiting for Ready ({reason})", state.percent)
        if state.readyAt is None:
            state = replace(state, readyAt=now)
            self._save(name, state)
        assert state.readyAt is not None
        remaining = plan.interval - (now - state.readyAt)
        if remaining > 0:
            return Tick(PROGRESSING, f"{state.label}: Ready, observing", state.percent)
        try:
            healthy, why = self._judge(isvc, mode, plan, canary)
        except PrometheusError as exc:
            if now - state.readyAt > plan.interval + plan.ready_timeout:
                return self._abort(name, canary, state, f"no health data: {exc.message}")
            return Tick(PROGRESSING, f"{state.label}: {exc.message}", state.percent)
        if not healthy:
            return self._abort(name, canary, state, f"{state.label}: {why}")
        if state.step + 1 == len(state.steps):
            done = replace(state, phase=SUCCEEDED, reason=why)
            return self._go(name, canary, None, done, f"promoted {canary.name}: {why}")
        following = replace(state, step=state.step + 1, since=now, readyAt=None)
        return self._go(name, live.stable, canary, following, f"{state.label} healthy ({why}); {following.label}")

    def _judge(self, isvc: dict[str, Any], mode: Mode, plan: RolloutPlan, canary: Version) -> tuple[bool, str]:
        if self.prometheus is None:
            return True, "Ready (no Prometheus configured)"
        meta = isvc["metadata"]
        selector = plan.selector.format(
            namespace=meta["namespace"], name=meta["name"], target=canary_target(isvc, mode), version=canary.name
        )
        return plan.thresholds.judge(self.prometheus.health(selector, plan.range))

    def _go(self, name: str, stable: Version, canary: Version | None, state: RolloutState, message: str) -> Tick:
        """Apply the split for ``state`` together with the state itself."""
        target = Split(stable, canary, state.percent) if canary else Split(stable)
        result = self.ctl.apply(
            name,
            "rollout",
            lambda isvc, live, history: target,
            annotations={ANN_ROLLOUT_STATE: state.dump()},
            wait=False,
        )
        return Tick(state.phase, message, state.percent, result.changed)

    def _abort(self, name: str, canary: Version, state: RolloutState, why: str) -> Tick:
        failed = replace(state, phase=ROLLED_BACK, reason=why)
        result = self.ctl.apply(
            name,
            "rollout",
            lambda isvc, live, history: Split(live.stable),
            annotations={ANN_ROLLOUT_STATE: failed.dump()},
            wait=False,
            detail=why,
        )
        self.ctl.log(f"{name}: rolled back {canary.name}: {why}")
        return Tick(ROLLED_BACK, f"rolled back {canary.name}: {why}", 0, result.changed)

    def _save(self, name: str, state: RolloutState) -> None:
        self.ctl.apply(
            name, "rollout", lambda isvc, live, history: live, annotations={ANN_ROLLOUT_STATE: state.dump()}, wait=False
        )
