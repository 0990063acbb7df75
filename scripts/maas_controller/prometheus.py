"""Canary health from Prometheus: error rate and p99 latency of the canary's pods only.

The predictors export ``maas_requests_total{model,protocol,status}`` (``status`` an HTTP code;
5xx are errors) and ``maas_request_duration_seconds_bucket{model,protocol,le}``. Those labels
do not say which revision served a request, so the query selects the canary by the labels
Prometheus attaches at scrape time. The selector is a template (``--canary-selector``) with
``{namespace}``, ``{name}`` (the InferenceService), ``{target}`` and ``{version}``, where
``{target}`` is the canary's workload name: the Knative revision
(``status.components.predictor.latestCreatedRevision``, pods ``<revision>-deployment-...``)
or the Standard-mode canary component (``status.canaryStatuses[0].name``). The default,
``namespace="{namespace}",pod=~"{target}-.*"``, works with the usual kubernetes-pods scrape
config (it adds ``namespace`` and ``pod``). With a relabelled revision label use e.g.
``revision="{target}"`` (Knative pods carry ``serving.knative.dev/revision``).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from .errors import ControllerError, ExitCode

DEFAULT_SELECTOR = 'namespace="{namespace}",pod=~"{target}-.*"'


class PrometheusError(ControllerError):
    """Prometheus could not be asked, or answered with an error."""

    status = 503
    exit_code = ExitCode.PROMETHEUS_UNAVAILABLE


@dataclass(frozen=True)
class Health:
    """What Prometheus says about the canary; ``None`` means no samples (no traffic)."""

    error_rate: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.01
    max_p99_ms: float = 250.0
    require_traffic: bool = False  # treat "no samples" as unhealthy

    def judge(self, health: Health) -> tuple[bool, str]:
        """(healthy, why) for a canary's health."""
        if health.error_rate is None or health.p99_ms is None:
            if self.require_traffic:
                return False, "no traffic observed on the canary"
            return True, "no traffic observed on the canary (accepted)"
        if health.error_rate > self.max_error_rate:
            return False, f"error rate {health.error_rate:.4f} > {self.max_error_rate:g}"
        if health.p99_ms > self.max_p99_ms:
            return False, f"p99 {health.p99_ms:.0f}ms > {self.max_p99_ms:g}ms"
        return True, f"error rate {health.error_rate:.4f}, p99 {health.p99_ms:.0f}ms"


def queries(selector: str, window: str) -> tuple[str, str]:
    """The PromQL for (error rate, p99 in ms) of the series matching ``selector``."""
    total = f"sum(rate(maas_requests_total{{{selector}}}[{window}]))"
    errors = f'sum(rate(maas_requests_total{{{selector},status=~"5.."}}[{window}]))'
    error_rate = f"({errors} or vector(0)) / {total}"
    p99 = (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(maas_request_duration_seconds_bucket{{{selector}}}[{window}]))) * 1000"
    )
    return error_rate, p99


class Prometheus:
    """A minimal client of the instant-query HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> float | None:
        """The first sample's value; ``None`` for an empty vector or NaN."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusError(f"query to {self.url} failed: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus error: {body.get('error', body)}")
        result = body.get("data", {}).get("result") or []
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    def health(self, selector: str, window: str) -> Health:
        error_rate, p99 = queries(selector, window)
        return Health(self.query(error_rate), self.query(p99))
