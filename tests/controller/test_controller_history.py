"""History: optimistic concurrency, bounds, and a property test of random command sequences."""

from __future__ import annotations

import threading

from controller_fakes.clock import FakeClock
from controller_fakes.kserve import CONFIGMAPS, NS, FakeKServe
from controller_fakes.kube_api import FakeApiServer, api_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from maas_controller.commands import Controller, Settings
from maas_controller.errors import Conflict, ValidationError
from maas_controller.history import History
from maas_controller.kube import Kube
from maas_controller.model import Mode, Version
from maas_controller.traffic import observed_traffic


def history_of(kube: Kube, name: str = "m") -> History:
    return History(kube, kube.get_isvc(NS, name))


def test_racing_append_is_retried_not_lost(api: FakeApiServer, kube: Kube, ctl: Controller, deployed: str):
    """Another controller appends between our read and our write: our PUT gets a 409."""
    mine, theirs = history_of(kube), history_of(Kube(api_client(api.url)))
    original = kube.get_configmap
    raced: list[int] = []

    def read_then_race(namespace: str, name: str) -> dict:
        cm = original(namespace, name)
        if not raced:
            raced.append(theirs.append(Version("v9", "s3://x/9"), "canary", "canary").seq)
        return cm

    kube.get_configmap = read_then_race  # type: ignore[method-assign]
    entry = mine.append(Version("v2", "s3://x/2"), "deploy", "rolled-out")
    assert (raced, entry.seq) == ([2], 3)
    assert [e.version for e in mine.entries()] == ["v1", "v9", "v2"]
    puts = [r for r in api.writes("/configmaps/m-maas-history") if r.method == "PUT"]
    assert len(puts) == 3  # theirs, our rejected one, our retry


def test_two_controllers_in_threads_keep_every_entry(api: FakeApiServer, kube: Kube, deployed: str):
    histories = [history_of(Kube(api_client(api.url))) for _ in range(2)]
    start = threading.Barrier(2)

    def writer(i: int) -> None:
        start.wait()
        for n in range(15):
            histories[i].append(Version(f"w{i}-{n}", f"s3://w/{i}/{n}"), "canary", "canary")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = history_of(kube).entries()
    assert len(entries) == 31
    assert [e.seq for e in entries] == list(range(1, 32))


def test_history_is_bounded_and_seq_keeps_counting(api: FakeApiServer, kube: Kube, deployed: str):
    history = History(kube, kube.get_isvc(NS, "m"), limit=5)
    for n in range(2, 10):
        history.append(Version(f"v{n}", f"s3://x/{n}"), "deploy", "rolled-out")
    entries = history.entries()
    assert [e.seq for e in entries] == [5, 6, 7, 8, 9]
    assert api.get(CONFIGMAPS, NS, "m-maas-history")["data"]["evicted"] == "4"


URIS = [f"s3://models/m/{i}" for i in range(1, 5)]
command = st.one_of(
    st.tuples(st.just("deploy"), st.sampled_from(URIS)),
    st.tuples(st.just("canary"), st.sampled_from(URIS), st.integers(0, 100)),
    st.tuples(st.just("promote")),
    st.tuples(st.just("rollback")),
    st.tuples(st.just("rollback-to"), st.sampled_from(["v1", "v2", "v3", "v4", "v9"])),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(mode=st.sampled_from(list(Mode)), commands=st.lists(command, max_size=8))
def test_random_commands_history_grows_and_traffic_sums_to_100(mode: Mode, commands: list):
    api = FakeApiServer().start()
    FakeKServe().install(api)
    try:
        ctl = Controller(Kube(api_client(api.url)), Settings(namespace=NS, poll=1.0), clock=FakeClock())
        ctl.deploy("m", URIS[0], model_format="maas-image", mode=mode)
        before = ctl.history("m")
        for cmd in commands:
            try:
                if cmd[0] == "deploy":
                    ctl.deploy("m", cmd[1])
                elif cmd[0] == "canary":
                    ctl.canary("m", cmd[1], cmd[2])
                elif cmd[0] == "promote":
                    ctl.promote("m")
                elif cmd[0] == "rollback":
                    ctl.rollback("m")
                else:
                    ctl.rollback("m", to=cmd[1])
            except (ValidationError, Conflict):
                pass  # refused commands change nothing
            after = ctl.history("m")
            assert after[: len(before)] == before  # nothing lost or rewritten
            assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
            before = after
            status = ctl.status("m")
            shares = [v["percent"] for v in (status["stable"], status["canary"]) if v]
            assert sum(shares) == 100
            assert sum(t["percent"] for t in observed_traffic(ctl.kube.get_isvc(NS, "m"), mode)) == 100
            assert status["ready"]
    finally:
        api.stop()
