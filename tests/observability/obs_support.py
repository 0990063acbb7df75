"""The observability tests' tools: the real ``prometheus`` binary scraping real maas servers, the
load the tests send (each request's model, protocol, status and measured latency kept), and
the bounds those records put on what a PromQL query may answer.

Prometheus runs on 127.0.0.1 with a 1s scrape interval. Its targets come from file-based
discovery: each carries ``__meta_kubernetes_namespace`` and ``__meta_kubernetes_pod_name`` and the
scrape config relabels them to ``namespace`` and ``pod``, as the usual ``kubernetes-pods`` job
does, so the controller's default canary selector (``namespace="NS",pod=~"TARGET-.*"``) and the
chart's dashboard and alerts see the labels they see in a cluster.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from predictors.metrics import _LATENCY_BUCKETS as LATENCY_BUCKETS  # the histogram's own edges
from tests.serving import ROOT, Server, free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
NOT_INSTALLED = (
    "the prometheus and promtool binaries are not installed "
    "(Debian/Ubuntu: apt-get install -y prometheus; scripts/quickstart.sh setup does it as root)"
)
CHART = ROOT / "helm" / "maas"
DASHBOARD = CHART / "dashboards" / "maas.json"

OBS = "obs"  # the namespace of the observed pods
CHAOS_DELAY = 0.3  # seconds ChaosNet sleeps per forward pass
CHAOS_QUEUE_WAIT = 0.15  # its queue deadline: a request waiting longer gets 503
# Pod names as Kubernetes makes them: WORKLOAD-<replicaset hash>-<suffix>; Knative's workload is
# REVISION-deployment.
WORKLOADS = {
    "digits-cnn": "digits-cnn-predictor",
    "chaos": "chaos-predictor",
    "loading": "loading-predictor-00001-deployment",
    "tiny-gpt": "tiny-gpt-predictor",
}
# maas_model_info's version of each served model: maas.yaml's `version` (the reference models and
# the chaos copy say '1'); the loading model's maas.yaml has none (conftest removes it).
VERSIONS = {"digits-cnn": "1", "chaos": "1", "loading": "unknown", "tiny-gpt": "1"}
GEN_TOKENS = 8  # max_tokens of every generation request; with ignore_eos, exactly what is generated
GEN_PROMPTS = ("one plus", "two plus three is", "four")
PODS = {model: f"{workload}-7c9d8f6b5-x1a2b" for model, workload in WORKLOADS.items()}
DEAD_POD = "dead-predictor-8f7e6d5c4-z9y8x"

# The rollouts of test_obs_rollout, in namespace `models`: (deployment mode, server of the stable
# pod, server of the canary pod). Their pods are scraped from the start, since Prometheus passes
# new targets from discovery to scraping only every 5 seconds.
ROLLOUT_NS = "models"
ROLLOUTS = {
    "healthy": ("Serverless", "digits-cnn", "digits-cnn"),
    "broken": ("Standard", "digits-cnn", "failing"),
    "sluggish": ("Serverless", "digits-cnn", "chaos"),
}


def rollout_pods(name: str) -> tuple[str, str]:
    """(stable pod, canary pod) as KServe names them: Knative revisions 00001 and 00002, or the
    Standard-mode NAME-predictor and NAME-predictor-canary Deployments."""
    if ROLLOUTS[name][0] == "Serverless":
        return f"{name}-predictor-00001-deployment-5d4c3-abcde", f"{name}-predictor-00002-deployment-6e5d4-fghij"
    return f"{name}-predictor-7f6e5d4c3-abcde", f"{name}-predictor-canary-8a7b6c5d4-fghij"


# The alerts as loaded into the test Prometheus: `for: 0s` so they fire at the first evaluation
# that holds, thresholds the load crosses for some models and not for others.
LIVE_ALERTS = {
    "enabled": True,
    "rateWindow": "1m",
    "highErrorRatio": {"threshold": 0.05, "for": "0s"},
    "highLatency": {"thresholdSeconds": 0.2, "for": "0s"},
    "queueRejections": {"threshold": 0.05, "for": "0s"},
    "modelNotReady": {"for": "0s"},
    "targetDown": {"for": "0s"},
}


class Prometheus:
    """A real Prometheus server in ``workdir``, scraping the targets added with ``add_target``."""

    def __init__(self, workdir: Path, rule_files: Iterable[Path] = ()) -> None:
        self.workdir = workdir
        self.targets = workdir / "targets"
        self.rule_files = [str(p) for p in rule_files]
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": self.rule_files,
            "scrape_configs": [
                {
                    "job_name": "maas-pods",
                    "file_sd_configs": [{"files": [str(self.targets / "*.json")], "refresh_interval": "1s"}],
                    "relabel_configs": [
                        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                    ],
                }
            ],
        }

    def start(self, timeout: float = 30) -> Prometheus:
        assert PROMETHEUS, NOT_INSTALLED
        self.targets.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def add_target(self, address: str, namespace: str, pod: str) -> None:
        """Scrape ``address`` as pod ``pod`` of ``namespace`` (picked up within a second)."""
        group = [
            {
                "targets": [address],
                "labels": {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": pod},
            }
        ]
        staged = self.targets / f".{pod}.tmp"
        staged.write_text(json.dumps(group))
        staged.rename(self.targets / f"{pod}.json")  # atomic: discovery never reads half a file

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result: ``[{"metric": {...}, "value": [ts, "v"]}]``."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] == "vector", data
        return data["result"]

    def scrape_times(self, pod: str) -> list[float]:
        """Timestamps of the scrapes of ``pod`` in the last minute."""
        result = self.api("query", query=f'up{{pod="{pod}"}}[1m]')["result"]
        return [float(ts) for series in result for ts, _ in series["values"]]

    def wait_for_scrape(self, pod: str, after: float, timeout: float = 15) -> float:
        """The timestamp of the first scrape of ``pod`` that started after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [ts for ts in self.scrape_times(pod) if ts > after]
            if later:
                return min(later)
            time.sleep(0.2)
        raise AssertionError(f"{pod} was not scraped within {timeout}s after {after}:\n{self.log()}")

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.25)


@dataclass(frozen=True)
class Call:
    """One request the test sent, as the test saw it."""

    model: str
    protocol: str
    status: int
    latency: float  # measured by the client: an upper bound of the server's own timing
    floor: float = 0.0  # a lower bound of the server's timing (a model's known sleep)
    rows: int = 0  # items in the request
    tokens: int = 0  # text generation: tokens generated (exact: ignore_eos and max_tokens)
    prompt_tokens: int = 0  # text generation: the prompt's tokens


@dataclass
class Record:
    """The calls of one phase, appended from several threads."""

    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def of(self, **match: Any) -> list[Call]:
        return [c for c in self.calls if all(getattr(c, k) == v for k, v in match.items())]


def timed(send: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    status = send()
    return status, time.perf_counter() - started


# --- what a histogram can say ------------------------------------------------------------------


def edge_below(value: float, edges: tuple[float, ...] = LATENCY_BUCKETS) -> float:
    """The lower edge of the bucket ``value`` falls in (buckets are ``(lower, upper]``)."""
    return max([0.0, *[e for e in edges if e < value]])


def edge_above(value: float, edges: tuple[float, ...] = LATENCY_BUCKETS) -> float:
    """The upper edge of the bucket ``value`` falls in (the largest finite edge above all)."""
    return min([e for e in edges if e >= value] or [edges[-1]])


def quantile_bounds(q: float, lows: list[float], highs: list[float], slack: float = 1.0) -> tuple[float, float]:
    """Where ``histogram_quantile(q, ...)`` must land for observations known only to lie in
    ``[lows[i], highs[i]]``: it interpolates inside the bucket holding the observation of rank
    ``q * n``, so it lies between the lower edge of that rank among the lows and the upper edge of
    it among the highs. ``slack`` >= 1 widens the rank for counts that rate() scales unevenly."""
    n = len(lows)
    assert n and len(highs) == n
    low_rank = max(1, math.ceil(q * n / slack - 1e-9))
    high_rank = min(n, max(1, math.ceil(q * n * slack - 1e-9)))
    return edge_below(sorted(lows)[low_rank - 1]), edge_above(sorted(highs)[high_rank - 1])


# --- the shipped PromQL ----------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_targets(board: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(panel title, refId, expr)`` of every query of every panel, rows' panels included."""
    found = []
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner["title"], target["refId"], target["expr"]))
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variable interpolation for ``$name`` and ``${name}``, longest names first."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr


def rule_groups(rendered_rule: dict[str, Any]) -> dict[str, Any]:
    """A Prometheus rules file from a rendered PrometheusRule: its ``spec`` is exactly that."""
    return {"groups": rendered_rule["spec"]["groups"]}


def alert_rules(rendered_rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rendered_rule["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


# --- the load the tests send ------------------------------------------------------------------------------------

IMAGE = np.zeros((1, 1, 8, 8), np.float32)


def images(rows: int, poison: bool = False) -> np.ndarray:
    x = np.repeat(IMAGE, rows, axis=0)
    if poison:
        x[0, 0, 0, 0] = 777  # ChaosNet raises for the whole batch: 500
    return x


def send(
    record: Record,
    server: Server,
    model: str,
    protocol: str,
    kind: str,
    rows: int = 1,
    floors: dict[int, float] | None = None,
) -> Call:
    """One request, recorded with the status the client got and the latency it measured.

    ``kind``: ``ok``, ``bad`` (a wrong shape or body: 400) or ``poison`` (500 from ChaosNet).
    ``floors``: per status, a time the server cannot have answered in less (a known sleep)."""
    x = images(rows, poison=kind == "poison")

    def call() -> int:
        if kind == "bad":
            if protocol == "v1":
                return server.v1({"instances": "not a list"}).status_code
            return server.v2_tensor("input", np.zeros((rows, 3, 8, 8), np.float32)).status_code
        if protocol == "v1":
            return server.v1({"instances": x.tolist()}).status_code
        if protocol == "v2":
            return server.v2_tensor("input", x).status_code
        server.grpc({"input": x})  # raises for anything but OK
        return 200

    status, latency = timed(call)
    result = Call(model, protocol, status, latency, (floors or {}).get(status, 0.0), rows)
    record.add(result)
    return result


SLOW = {200: CHAOS_DELAY}  # an answered chaos request slept in its forward pass


def burst(record: Record, server: Server) -> list[Call]:
    """Three requests 50 ms apart at the chaos model (batches of one, a queue of one): the first is
    served (>= CHAOS_DELAY), the second waits past the queue deadline (503, >= CHAOS_QUEUE_WAIT),
    the third finds the queue full (429). The statuses are what the client got, whatever happened."""
    calls: list[Call] = []

    def one(i: int) -> None:
        time.sleep(0.05 * i)
        x = images(1)
        status, latency = timed(lambda: server.v2_tensor("input", x).status_code)
        floor = {200: CHAOS_DELAY, 503: CHAOS_QUEUE_WAIT}.get(status, 0.0)
        calls.append(Call("chaos", "v2", status, latency, floor, 1))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in calls:
        record.add(c)
    return calls


def cnn_load(record: Record, server: Server, rounds: int) -> None:
    """Sequential requests (so each answered one is one forward pass of ``rows`` items)."""
    for i in range(rounds):
        rows = 1 + i % 3
        send(record, server, "digits-cnn", "v2", "ok", rows)
        send(record, server, "digits-cnn", "v1", "ok", rows)
        send(record, server, "digits-cnn", "v2", "bad", rows)
        if i % 2 == 0:
            send(record, server, "digits-cnn", "grpc", "ok", rows)
            send(record, server, "digits-cnn", "v1", "bad")


def chaos_load(record: Record, server: Server, rounds: int) -> None:
    for _ in range(rounds):
        send(record, server, "chaos", "v2", "ok", floors=SLOW)
        send(record, server, "chaos", "v2", "poison")
        burst(record, server)


def loading_load(record: Record, server: Server, rounds: int) -> None:
    for _ in range(rounds):
        send(record, server, "loading", "v2", "ok")
        send(record, server, "loading", "v1", "ok")


def generate(record: Record, server: Server, protocol: str, prompt: str, prompt_tokens: int = 0) -> Call:
    """One text of exactly GEN_TOKENS tokens from tiny-gpt, through OpenAI's completions (whose
    usage says the prompt's length) or V1 (``prompt_tokens`` given, from an OpenAI call before)."""
    options = {"ignore_eos": True, "temperature": 0}
    started = time.perf_counter()
    if protocol == "openai":
        body = {"model": server.name, "prompt": prompt, "max_tokens": GEN_TOKENS, **options}
        response = server.client.post("/openai/v1/completions", json=body)
    else:
        response = server.v1({"instances": [prompt], "parameters": {"max_new_tokens": GEN_TOKENS, **options}})
    latency = time.perf_counter() - started
    assert response.status_code == 200, response.text
    if protocol == "openai":
        usage = response.json()["usage"]
        assert usage["completion_tokens"] == GEN_TOKENS, usage
        prompt_tokens = usage["prompt_tokens"]
    else:
        assert response.json()["predictions"][0]["num_tokens"] == GEN_TOKENS
    result = Call(server.name, protocol, 200, latency, 0.0, 1, GEN_TOKENS, prompt_tokens)
    record.add(result)
    return result


def generation_load(record: Record, server: Server, rounds: int) -> None:
    """Sequential texts (so every prefill and decode step runs one row), each prompt once through
    OpenAI's API and once through V1."""
    for i in range(rounds):
        prompt = GEN_PROMPTS[i % len(GEN_PROMPTS)]
        first = generate(record, server, "openai", prompt)
        generate(record, server, "v1", prompt, first.prompt_tokens)


def in_parallel(*jobs: Any) -> None:
    threads = [threading.Thread(target=job[0], args=job[1:]) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@dataclass(frozen=True)
class Window:
    """Two scrapes of one pod around the measured load: a query at ``at`` over ``range`` (from
    just before ``first``) sees the samples from ``first`` to ``last`` and nothing else, so
    rate() extrapolates by 5 ms at each end and equals the increase over ``last - first``."""

    first: float
    last: float

    @property
    def at(self) -> float:
        return self.last + 0.005

    @property
    def range(self) -> str:
        return f"{round((self.last - self.first + 0.010) * 1000)}ms"

    @property
    def seconds(self) -> float:
        """The sampled interval: rate() = increase / seconds."""
        return self.last - self.first


@dataclass
class Traffic:
    calls: list[Call]
    primed: list[Call]
    windows: dict[str, Window]  # by model

    def of(self, model: str, **match: Any) -> list[Call]:
        return [c for c in self.calls if c.model == model and all(getattr(c, k) == v for k, v in match.items())]


def address(server: Server) -> str:
    return f"127.0.0.1:{server.http_port}"


# the alerts the chart's PrometheusRule ships
ALERTS = {
    "MaasHighErrorRatio",
    "MaasHighLatency",
    "MaasQueueRejections",
    "MaasModelNotReady",
    "MaasPodNotReady",
    "MaasTargetDown",
}
