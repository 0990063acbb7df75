"""Every PromQL expression the project ships, evaluated by a real Prometheus that scraped real
maas servers under a known load, against numbers computed from the test's own requests.

Counts and ratios are exact: each query is made per model at the scrape after the load, over a
range starting just before the scrape that followed the priming, so rate() sees exactly the
measured requests (see conftest.Window). Quantiles are bounded by the histogram's buckets: every
request took at least its known floor (a model's sleep) and at most what the client measured,
and ``histogram_quantile`` lands inside the bucket of the observation of that rank.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import pytest
from maas_controller.prometheus import queries
from obs_support import (
    ALERTS,
    CHAOS_DELAY,
    DEAD_POD,
    LIVE_ALERTS,
    OBS,
    PODS,
    SLOW,
    VERSIONS,
    WORKLOADS,
    Call,
    Prometheus,
    Record,
    Traffic,
    Window,
    alert_rules,
    burst,
    dashboard,
    edge_below,
    panel_targets,
    quantile_bounds,
    send,
    substitute,
)

from tests.serving import ROOT

Key = tuple[str, ...]
Bounds = tuple[float, float]
MODELS = tuple(PODS)
PANELS = panel_targets(dashboard())


@dataclass
class Expect:
    """What a query must return: one series per key (the values of ``labels``), each in bounds."""

    labels: tuple[str, ...]
    series: dict[Key, Bounds]


def exact(value: float) -> Bounds:
    return value * (1 - 1e-3) - 1e-9, value * (1 + 1e-3) + 1e-9


NAN: Bounds = (math.nan, math.nan)  # 0 / 0: a histogram that exists and observed nothing


def label_of(call: Call, name: str) -> str:
    if name == "workload":
        return WORKLOADS[call.model]
    if name == "namespace":
        return OBS
    if name == "version":
        return VERSIONS[call.model]
    return str(getattr(call, name))


def grouped(calls: Iterable[Call], labels: tuple[str, ...]) -> dict[Key, list[Call]]:
    groups: dict[Key, list[Call]] = {}
    for call in calls:
        groups.setdefault(tuple(label_of(call, name) for name in labels), []).append(call)
    return groups


def rates(calls: list[Call], window: Window, labels: tuple[str, ...]) -> Expect:
    return Expect(labels, {k: exact(len(g) / window.seconds) for k, g in grouped(calls, labels).items()})


def ratios(calls: list[Call], labels: tuple[str, ...], hit: Callable[[Call], bool]) -> Expect:
    return Expect(labels, {k: exact(sum(map(hit, g)) / len(g)) for k, g in grouped(calls, labels).items()})


def quantiles(calls: list[Call], window: Window, labels: tuple[str, ...], q: float) -> Expect:
    slack = (window.seconds + 0.010) / window.seconds  # rate() extrapolates a series born at 0 by 5 ms less
    return Expect(
        labels,
        {
            k: quantile_bounds(q, [c.floor for c in g], [c.latency for c in g], slack)
            for k, g in grouped(calls, labels).items()
        },
    )


def answered(calls: list[Call]) -> list[Call]:
    """The calls that reached a forward pass: one batch each (sequential, or batches of one)."""
    return [c for c in calls if c.status == 200]


def is_5xx(call: Call) -> bool:
    return call.status >= 500


def mean_batch(calls: list[Call], per: Callable[[Call], int]) -> Expect:
    batches = answered(calls)
    if not batches:
        return Expect(("model",), {})
    return Expect(("model",), {(batches[0].model,): exact(sum(map(per, batches)) / len(batches))})


def generated(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.tokens]


def steps(calls: list[Call]) -> list[Call]:
    """A text generation's prefill and decode steps, one per generated token (each ran one row,
    the texts being sequential), each as long as its request at most."""
    return [Call(c.model, "", 0, c.latency) for c in generated(calls) for _ in range(c.tokens)]


def gaps(calls: list[Call]) -> list[Call]:
    """The times between consecutive tokens: GEN_TOKENS - 1 per text, each within its request."""
    return [Call(c.model, "", 0, c.latency) for c in generated(calls) for _ in range(c.tokens - 1)]


def per_model(calls: list[Call], value: Callable[[list[Call]], float], when: bool = True) -> Expect:
    return Expect(M, {(calls[0].model,): exact(value(calls))} if when else {})


def stuck(calls: list[Call]) -> bool:
    """Refused with 503 and never answered: the model never got ready (the `loading` server)."""
    return any(c.status == 503 for c in calls) and not any(200 <= c.status < 300 for c in calls)


def forward_passes(c: list[Call], w: Window, q: float) -> Expect:
    if generated(c):
        return quantiles(steps(c), w, M, q)
    return quantiles(answered(c), w, M, q)


def batcher(c: list[Call], w: Window, expect: Callable[[], Expect]) -> Expect:
    """Text generation runs on its engine, not the batcher: the batcher's histograms exist, empty."""
    return Expect(M, {(c[0].model,): NAN}) if generated(c) else expect()


M, MPS, MP = ("model",), ("model", "protocol", "status"), ("model", "protocol")
# What every panel query means, in terms of the calls of one model and its window.
MEANING: dict[tuple[str, str], Callable[[list[Call], Window], Expect]] = {
    ("Request rate by model, protocol and status", "A"): lambda c, w: rates(c, w, MPS),
    ("Error ratio (5xx) by model", "A"): lambda c, w: ratios(c, M, is_5xx),
    ("Error ratio (5xx) by protocol", "A"): lambda c, w: ratios(c, MP, is_5xx),
    ("Request latency p50 / p95 / p99", "A"): lambda c, w: quantiles(c, w, M, 0.5),
    ("Request latency p50 / p95 / p99", "B"): lambda c, w: quantiles(c, w, M, 0.95),
    ("Request latency p50 / p95 / p99", "C"): lambda c, w: quantiles(c, w, M, 0.99),
    ("p99 latency by protocol", "A"): lambda c, w: quantiles(c, w, MP, 0.99),
    ("Error ratio (5xx) by workload (stable / canary)", "A"): lambda c, w: ratios(c, ("model", "workload"), is_5xx),
    ("p99 latency by workload (stable / canary)", "A"): lambda c, w: quantiles(c, w, ("model", "workload"), 0.99),
    # a generation step runs one row of one text: one item per step
    ("Batch size (mean per forward pass)", "A"): lambda c, w: mean_batch(c, lambda call: call.rows),
    ("Batch size (mean per forward pass)", "B"): lambda c, w: batcher(c, w, lambda: mean_batch(c, lambda call: 1)),
    # Queue and forward times are observed per answered request: each waited at least nothing
    # and at most its whole latency; a chaos forward pass slept at least CHAOS_DELAY.
    ("Queue time p50 / p99", "A"): lambda c, w: batcher(
        c, w, lambda: quantiles([Call(x.model, "", 0, x.latency) for x in answered(c)], w, M, 0.5)
    ),
    ("Queue time p50 / p99", "B"): lambda c, w: batcher(
        c, w, lambda: quantiles([Call(x.model, "", 0, x.latency) for x in answered(c)], w, M, 0.99)
    ),
    ("Forward time p50 / p99", "A"): lambda c, w: forward_passes(c, w, 0.5),
    ("Forward time p50 / p99", "B"): lambda c, w: forward_passes(c, w, 0.99),
    ("Queue rejections (429 / 503)", "A"): lambda c, w: rates([x for x in c if x.status in (429, 503)], w, MPS),
    ("Request rate by model and version", "A"): lambda c, w: rates(c, w, ("model", "version")),
    ("p99 latency by model and version", "A"): lambda c, w: quantiles(c, w, ("model", "version"), 0.99),
    ("Model replicas ready / not ready", "A"): lambda c, w: per_model(c, lambda g: 0 if stuck(g) else 1),
    ("Model replicas ready / not ready", "B"): lambda c, w: per_model(c, lambda g: 1, when=stuck(c)),
    # Text generation: only tiny-gpt has these series. Its texts are sequential and exactly
    # GEN_TOKENS long; a first token comes within its request, and so does each gap between tokens.
    ("Text generation: tokens per second", "A"): lambda c, w: per_model(
        c, lambda g: sum(x.tokens for x in g) / w.seconds, when=bool(generated(c))
    ),
    ("Text generation: tokens per second", "B"): lambda c, w: per_model(
        c, lambda g: sum(x.prompt_tokens for x in g) / w.seconds, when=bool(generated(c))
    ),
    ("Text generation: time to first token p50 / p99", "A"): lambda c, w: quantiles(
        [Call(x.model, "", 0, x.latency) for x in generated(c)], w, M, 0.5
    ),
    ("Text generation: time to first token p50 / p99", "B"): lambda c, w: quantiles(
        [Call(x.model, "", 0, x.latency) for x in generated(c)], w, M, 0.99
    ),
    ("Text generation: time per output token p50 / p99", "A"): lambda c, w: quantiles(gaps(c), w, M, 0.5),
    ("Text generation: time per output token p50 / p99", "B"): lambda c, w: quantiles(gaps(c), w, M, 0.99),
    # after the load every text has ended: nothing runs, waits or holds the cache
    ("Text generation: sequences running / waiting", "A"): lambda c, w: per_model(c, lambda g: 0, bool(generated(c))),
    ("Text generation: sequences running / waiting", "B"): lambda c, w: per_model(c, lambda g: 0, bool(generated(c))),
    ("Text generation: KV-cache use", "A"): lambda c, w: per_model(c, lambda g: 0, when=bool(generated(c))),
}
# Panels about the scrape targets, not one model: the test knows it runs a live target per model
# and one whose port nobody listens on.
TARGET_PANELS = {
    ("Scrape targets up / down", "A"): Expect(("namespace",), {(OBS,): exact(len(PODS))}),
    ("Scrape targets up / down", "B"): Expect(("namespace",), {(OBS,): exact(1)}),
}


def check(prom: Prometheus, expr: str, at: float, expect: Expect, keep: Callable[[dict], bool] = lambda m: True):
    result = [r for r in prom.query(expr, at) if keep(r["metric"])]
    got = {tuple(r["metric"].get(name, "") for name in expect.labels): float(r["value"][1]) for r in result}
    assert len(got) == len(result), f"two series with the same {expect.labels}: {result}"
    assert set(got) == set(expect.series), f"{expr}\n got {got}\n expected {expect.series}"
    for key, value in got.items():
        low, high = expect.series[key]
        if math.isnan(low):
            assert math.isnan(value), f"{expr}\n {key}: {value}, expected NaN"
            continue
        assert low <= value <= high, f"{expr}\n {key}: {value} not in [{low}, {high}]"


def test_every_panel_has_a_meaning_here():
    """A new panel must say here what it should show, or this suite would not check it."""
    assert {(title, ref) for title, ref, _ in PANELS} == set(MEANING) | set(TARGET_PANELS)


@pytest.mark.parametrize(("title", "ref", "expr"), PANELS, ids=[f"{t} {r}" for t, r, _ in PANELS])
def test_dashboard_panel(prom: Prometheus, traffic: Traffic, title: str, ref: str, expr: str):
    if (title, ref) in TARGET_PANELS:
        window = traffic.windows["digits-cnn"]
        query = substitute(expr, {"namespace": OBS, "model": ".*", "__rate_interval": window.range})
        check(prom, query, window.at, TARGET_PANELS[(title, ref)])
        return
    for model in MODELS:
        window = traffic.windows[model]
        query = substitute(expr, {"namespace": OBS, "model": model, "__rate_interval": window.range})
        check(prom, query, window.at, MEANING[(title, ref)](traffic.of(model), window))


def test_template_variables_list_what_was_served(prom: Prometheus, traffic: Traffic):
    """The namespace and model variables (``label_values``) offer the namespaces and models served."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"

    def label_values(definition: str, at: float) -> set[str]:
        inner = definition[len("label_values(") : -1]
        selector, label = (part.strip() for part in inner.rsplit(",", 1))
        series = prom.api("series", **{"match[]": selector, "start": f"{at - 60:.3f}", "end": f"{at:.3f}"})
        return {s[label] for s in series if label in s}

    at = traffic.windows["digits-cnn"].at
    assert OBS in label_values(variables["namespace"]["definition"], at)
    models = label_values(substitute(variables["model"]["definition"], {"namespace": OBS}), at)
    assert models == set(MODELS)
    assert variables["model"]["includeAll"] and variables["model"]["allValue"] == ".*"


@pytest.mark.parametrize("model", MODELS)
def test_controller_gates(prom: Prometheus, traffic: Traffic, model: str):
    """The rollout's two queries, with the default selector filled in as for a canary target."""
    window = traffic.windows[model]
    calls = traffic.of(model)
    error_rate, p99 = queries(f'namespace="{OBS}",pod=~"{WORKLOADS[model]}-.*"', window.range)
    check(prom, error_rate, window.at, Expect((), {(): exact(sum(map(is_5xx, calls)) / len(calls))}))
    low, high = quantiles(calls, window, (), 0.99).series[()]
    check(prom, p99, window.at, Expect((), {(): (low * 1000, high * 1000)}))


def test_controller_selector_sees_only_its_target(prom: Prometheus, traffic: Traffic):
    """The default selector of one workload picks that pod's series and no other's."""
    window = traffic.windows["chaos"]
    total = (
        f'sum by (pod) (rate(maas_requests_total{{namespace="{OBS}",pod=~"{WORKLOADS["chaos"]}-.*"}}[{window.range}]))'
    )
    assert [r["metric"]["pod"] for r in prom.query(total, window.at)] == [PODS["chaos"]]


@pytest.mark.parametrize("model", MODELS)
def test_alert_expressions(render, prom: Prometheus, traffic: Traffic, model: str):
    """Each alert rule's expression, from the chart rendered with this model's window: it selects
    the model exactly when the model's own numbers cross the threshold, with those numbers."""
    window = traffic.windows[model]
    (rule,) = render({"alerts": {**LIVE_ALERTS, "rateWindow": window.range}}, namespace=OBS).of_kind("PrometheusRule")
    calls = traffic.of(model)
    n = len(calls)
    seen = set()
    for alert in alert_rules(rule):
        name, expr = alert["alert"], alert["expr"]
        seen.add(name)
        mine = lambda metric: metric.get("model") == model  # noqa: E731
        if name == "MaasHighErrorRatio":
            ratio = sum(map(is_5xx, calls)) / n
            threshold = LIVE_ALERTS["highErrorRatio"]["threshold"]
            expect = Expect(M, {(model,): exact(ratio)} if ratio > threshold else {})
        elif name == "MaasHighLatency":
            low, high = quantiles(calls, window, M, 0.99).series[(model,)]
            threshold = LIVE_ALERTS["highLatency"]["thresholdSeconds"]
            if low <= threshold <= high:
                continue  # the buckets cannot tell; the other models decide this one
            expect = Expect(M, {(model,): (low, high)} if low > threshold else {})
        elif name == "MaasQueueRejections":
            ratio = sum(c.status in (429, 503) for c in calls) / n
            threshold = LIVE_ALERTS["queueRejections"]["threshold"]
            expect = Expect(M, {(model,): exact(ratio)} if ratio > threshold else {})
        elif name == "MaasPodNotReady":
            expect, mine = Expect(("pod",), {}), lambda metric: True  # no kube-state-metrics here
        elif name == "MaasModelNotReady":
            expect = Expect(M, {(model,): exact(0)} if stuck(calls) else {})  # maas_model_ready 0
        elif name == "MaasTargetDown":
            expect, mine = Expect(("pod",), {(DEAD_POD,): (0, 0)}), lambda metric: True
        else:
            raise AssertionError(f"no expectation for alert {name}")
        check(prom, expr, window.at, expect, keep=mine)
    assert seen == ALERTS


def test_alerts_fire_in_prometheus(prom: Prometheus, traffic: Traffic):
    """The rules loaded into Prometheus itself fire for the failing models and the dead target,
    and stay quiet for the healthy model and the live targets."""
    everything = traffic.primed + traffic.calls

    def share(model: str, hit: Callable[[Call], bool]) -> float:
        calls = [c for c in everything if c.model == model]
        return sum(map(hit, calls)) / len(calls)

    must, never = set(), set()
    for model in MODELS:
        errors = share(model, is_5xx)
        (must if errors > 2 * LIVE_ALERTS["highErrorRatio"]["threshold"] else never if errors == 0 else set()).add(
            ("MaasHighErrorRatio", model)
        )
        rejected = share(model, lambda c: c.status in (429, 503))
        (must if rejected > 2 * LIVE_ALERTS["queueRejections"]["threshold"] else never if rejected == 0 else set()).add(
            ("MaasQueueRejections", model)
        )
        never_answered = share(model, lambda c: c.status == 200) == 0
        (must if never_answered else never).add(("MaasModelNotReady", model))
        mine = [c for c in everything if c.model == model]
        low, high = quantile_bounds(0.99, [c.floor for c in mine], [c.latency for c in mine], slack=1.2)
        threshold = LIVE_ALERTS["highLatency"]["thresholdSeconds"]
        if low > threshold:
            must.add(("MaasHighLatency", model))
        elif high < threshold:
            never.add(("MaasHighLatency", model))
    must.add(("MaasTargetDown", DEAD_POD))
    never |= {("MaasTargetDown", pod) for pod in PODS.values()}
    assert ("MaasHighErrorRatio", "digits-cnn") in never and ("MaasHighLatency", "chaos") in must

    def firing() -> set[tuple[str, str]]:
        alerts = prom.api("alerts")["alerts"]
        return {
            (a["labels"]["alertname"], a["labels"].get("model") or a["labels"].get("pod", ""))
            for a in alerts
            if a["state"] == "firing" and a["labels"].get("namespace") == OBS
        }

    fired = prom.wait_until(f"alerts {sorted(must)}", lambda: (lambda f: f if must <= f else None)(firing()))
    assert not fired & never, sorted(fired & never)
    for alert in prom.api("alerts")["alerts"]:
        if alert["state"] == "firing":
            assert alert["annotations"]["runbook_url"].endswith("#" + alert["labels"]["alertname"].lower())
            assert alert["labels"]["severity"] in ("critical", "warning")
            assert "{{" not in alert["annotations"]["summary"] + alert["annotations"]["description"]


def render_panel(prom: Prometheus, out: Path, start: float, end: float, rate_interval: str) -> dict:
    """scripts/render_panel.py on the latency panel for the two serving models; what it drew."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "render_panel.py"),
            "--prometheus",
            prom.url,
            "--panel",
            "Request latency p50 / p95 / p99",
            "--var",
            f"namespace={OBS}",
            "--var",
            "model=digits-cnn|chaos",
            "--start",
            f"{start:.3f}",
            "--end",
            f"{end:.3f}",
            "--step",
            "1s",
            "--rate-interval",
            rate_interval,
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    drawn = json.loads(result.stdout)
    assert drawn["panel"] == "Request latency p50 / p95 / p99"
    legends = {f"{m} p{q}" for m in ("digits-cnn", "chaos") for q in (50, 95, 99)}
    assert {s["legend"] for s in drawn["series"]} == legends
    assert all(s["points"] > 0 for s in drawn["series"])
    image = matplotlib.image.imread(out)
    assert image.shape[0] >= 300 and image.shape[1] >= 600
    assert len({tuple(px) for px in image.reshape(-1, image.shape[-1])[::97].tolist()}) > 4  # not blank
    return drawn


def test_render_panel_png(prom: Prometheus, traffic: Traffic, tmp_path: Path):
    """scripts/render_panel.py draws a panel from query_range over the measured load."""
    start = min(w.first for w in traffic.windows.values()) - 2
    end = max(w.last for w in traffic.windows.values()) + 2
    drawn = render_panel(prom, tmp_path / "latency-panel.png", start, end, "4s")
    # the chaos model's p99 is at least the bucket below CHAOS_DELAY: its answered calls all slept
    assert max(s["max"] for s in drawn["series"] if s["legend"] == "chaos p99") >= edge_below(CHAOS_DELAY)


@pytest.mark.slow
def test_docs_image(prom: Prometheus, fleet, tmp_path: Path):
    """The README's picture, docs/images/latency-panel.png, from 75 s of load: the CNN steady,
    the chaos model first served one request at a time, then in bursts (fast 429s and 503s pull
    its median down), then one at a time again. MAAS_UPDATE_DOCS_IMAGES=1 writes it into docs/."""
    record = Record()
    start = time.time()
    stop = threading.Event()

    def cnn() -> None:
        i = 0
        while not stop.is_set():
            send(record, fleet["digits-cnn"], "digits-cnn", ("v1", "v2")[i % 2], "ok", 1 + i % 4)
            i += 1
            time.sleep(0.02)

    thread = threading.Thread(target=cnn)
    thread.start()
    try:
        while time.time() - start < 75:
            elapsed = time.time() - start
            if 25 < elapsed < 50:
                burst(record, fleet["chaos"])
            else:
                send(record, fleet["chaos"], "chaos", "v2", "ok", floors=SLOW)
                time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    out = ROOT / "docs" / "images" if os.environ.get("MAAS_UPDATE_DOCS_IMAGES") else tmp_path
    prom.wait_for_scrape(PODS["chaos"], time.time())
    render_panel(prom, out / "latency-panel.png", start, time.time(), "10s")
