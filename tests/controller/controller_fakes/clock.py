"""TEST SCAFFOLDING: virtual time for the controller."""

from __future__ import annotations

from dataclasses import dataclass, field

from maas_controller.kube import Clock


@dataclass
class FakeClock(Clock):
    """``sleep`` advances the time at once, so 60s intervals cost nothing."""

    t: float = 1_700_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.now = lambda: self.t
        self.sleep = self._sleep

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
