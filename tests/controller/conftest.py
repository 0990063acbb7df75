"""Fixtures for the version controller: a fake API server over HTTP, fake KServe, fake clock.

The official ``kubernetes`` client talks HTTP to ``FakeApiServer`` on 127.0.0.1; nothing in the
client is patched. ``FakeKServe`` and ``FakePrometheus`` are test scaffolding (see their module).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from controller_fakes.clock import FakeClock
from controller_fakes.kserve import NS, FakeKServe
from controller_fakes.kube_api import FakeApiServer, api_client
from controller_fakes.prometheus import FakePrometheus
from maas_controller.commands import Controller, Settings
from maas_controller.kube import Kube
from maas_controller.model import Mode


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def kserve(api: FakeApiServer) -> FakeKServe:
    return FakeKServe().install(api)


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
