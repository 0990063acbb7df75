"""Fixtures for the version controller: a fake API server over HTTP, fake KServe, fake clock.

The official ``kubernetes`` client talks HTTP to ``FakeApiServer`` on 127.0.0.1; nothing in the
client is patched. ``FakeKServe`` and ``FakePrometheus`` are test scaffolding (see their module).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_kserve import NS, FakeKServe, FakePrometheus
from fake_kube_api import FakeApiServer
from maas_controller.commands import Controller, Settings
from maas_controller.kube import Clock, Kube
from maas_controller.model import Mode


@dataclass
class FakeClock(Clock):
    """Virtual time: ``sleep`` advances it at once, so 60s intervals cost nothing."""

    t: float = 1_700_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.now = lambda: self.t
        self.sleep = self._sleep

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def kserve(api: FakeApiServer) -> FakeKServe:
    return FakeKServe().install(api)


def api_client(url: str):  # type: ignore[no-untyped-def]
    from kubernetes import client

    return client.ApiClient(client.Configuration(host=url))


@pytest.fixture
def kube(api: FakeApiServer, kserve: FakeKServe) -> Kube:
    return Kube(api_client(api.url))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[Mode.KNATIVE, Mode.STANDARD], ids=["knative", "standard"])
def mode(request: pytest.FixtureRequest) -> Mode:
    return request.param


@pytest.fixture
def make_controller(kube: Kube, clock: FakeClock) -> Callable[..., Controller]:
    def make(**overrides: object) -> Controller:
        values: dict = {"namespace": NS, "timeout": 30.0, "poll": 1.0, **overrides}
        settings = Settings(**values)
        return Controller(kube, settings, clock=clock)

    return make


@pytest.fixture
def ctl(make_controller: Callable[..., Controller]) -> Controller:
    return make_controller()


@pytest.fixture
def deployed(ctl: Controller, mode: Mode) -> str:
    """An InferenceService ``m`` at v1, in the parametrized mode."""
    ctl.deploy("m", "s3://models/m/1", model_format="maas-image", mode=mode)
    return "m"


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus().start()
    yield server
    server.stop()
