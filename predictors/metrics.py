"""Prometheus metrics beyond kserve's own, served on the same ``/metrics`` endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from predictors.batching import BatchStats

UNKNOWN_MODEL = "_unknown"  # the model label of requests naming no served model
CLIENT_CLOSED = 499  # nginx's status for a client that left before the answer

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter(
    "maas_requests",
    "Inference requests by protocol (v1, v2, grpc) and status (HTTP code; gRPC mapped to HTTP).",
    ["model", "protocol", "status"],
)
REQUEST_DURATION = Histogram(
    "maas_request_duration_seconds",
    "Time from request arrival to response, inside the server.",
    ["model", "protocol"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram("maas_batch_size", "Items per forward pass.", ["model"], buckets=_BATCH_BUCKETS)
BATCH_REQUESTS = Histogram(
    "maas_batch_requests", "Requests coalesced into one forward pass.", ["model"], buckets=_BATCH_BUCKETS
)
QUEUE_TIME = Histogram(
    "maas_queue_time_seconds", "Time a request waited in the batch queue.", ["model"], buckets=_LATENCY_BUCKETS
)
FORWARD_TIME = Histogram(
    "maas_forward_time_seconds", "Time of one batched forward pass.", ["model"], buckets=_LATENCY_BUCKETS
)


MODEL_INFO = Gauge(
    "maas_model_info",
    "Always 1: the served model's version (maas.yaml's, else unknown) and family, to join on model.",
    ["model", "version", "family"],
)
MODEL_READY = Gauge(
    "maas_model_ready",
    "1 when the model is loaded and the server takes traffic; 0 while loading, after a failed load and once draining.",
    ["model"],
)


def model_info(model: str, version: str | None, family: str) -> None:
    """Publish the model's info series, and its readiness as not ready yet."""
    MODEL_INFO.labels(model, version or "unknown", family).set(1)
    MODEL_READY.labels(model).set(0)


def model_ready(model: str, ready: bool) -> None:
    MODEL_READY.labels(model).set(1 if ready else 0)


def observe_request(model: str, protocol: str, status: int, seconds: float) -> None:
    REQUESTS.labels(model, protocol, str(status)).inc()
    REQUEST_DURATION.labels(model, protocol).observe(seconds)


def batch_observer(model: str):
    """A callback for ``AdaptiveBatcher(on_batch=...)`` that records one model's batches."""
    size, requests = BATCH_SIZE.labels(model), BATCH_REQUESTS.labels(model)
    queue, forward = QUEUE_TIME.labels(model), FORWARD_TIME.labels(model)

    def observe(stats: BatchStats) -> None:
        size.observe(stats.items)
        requests.observe(stats.requests)
        forward.observe(stats.forward_seconds)
        for seconds in stats.queue_seconds:
            queue.observe(seconds)

    return observe


_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TIME_TO_FIRST_TOKEN = Histogram(
    "maas_time_to_first_token_seconds",
    "Text generation: time from a sequence's arrival to its first generated token.",
    ["model"],
    buckets=_TOKEN_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "maas_time_per_output_token_seconds",
    "Text generation: time between a sequence's consecutive generated tokens.",
    ["model"],
    buckets=_TOKEN_BUCKETS,
)
PROMPT_TOKENS = Counter("maas_prompt_tokens", "Text generation: prompt tokens prefilled.", ["model"])
GENERATED_TOKENS = Counter("maas_generated_tokens", "Text generation: tokens generated.", ["model"])
RUNNING = Gauge("maas_sequences_running", "Text generation: sequences in the running batch.", ["model"])
WAITING = Gauge("maas_sequences_waiting", "Text generation: sequences waiting for room in the KV cache.", ["model"])
KV_TOKENS = Gauge(
    "maas_kv_cache_tokens", "Text generation: token slots the KV cache holds (padding included).", ["model"]
)
KV_CAPACITY = Gauge(
    "maas_kv_cache_capacity_tokens", "Text generation: the KV-cache bound (--max_kv_tokens).", ["model"]
)
KV_USAGE = Gauge("maas_kv_cache_usage_ratio", "Text generation: KV-cache tokens held over the bound.", ["model"])


class GenerationMetrics:
    """One model's text-generation metrics, labelled once."""

    def __init__(self, model: str) -> None:
        self._ttft, self._tpot = TIME_TO_FIRST_TOKEN.labels(model), TIME_PER_OUTPUT_TOKEN.labels(model)
        self._prompt, self._generated = PROMPT_TOKENS.labels(model), GENERATED_TOKENS.labels(model)
        self._running, self._waiting = RUNNING.labels(model), WAITING.labels(model)
        self._kv, self._capacity, self._usage = (
            KV_TOKENS.labels(model),
            KV_CAPACITY.labels(model),
            KV_USAGE.labels(model),
        )
        self._rows, self._forward = BATCH_SIZE.labels(model), FORWARD_TIME.labels(model)
        self._bound = 1

    def forward(self, rows: int, seconds: float) -> None:
        """One prefill or decode step over ``rows`` sequences (as ``maas_batch_size``/``maas_forward_time``)."""
        self._rows.observe(rows)
        self._forward.observe(seconds)

    def capacity(self, tokens: int) -> None:
        self._bound = tokens
        self._capacity.set(tokens)

    def first_token(self, seconds: float) -> None:
        self._ttft.observe(seconds)

    def time_per_token(self, seconds: float) -> None:
        self._tpot.observe(seconds)

    def prompt_tokens(self, n: int) -> None:
        self._prompt.inc(n)

    def generated_tokens(self, n: int) -> None:
        self._generated.inc(n)

    def state(self, running: int, waiting: int, kv_tokens: int) -> None:
        self._running.set(running)
        self._waiting.set(waiting)
        self._kv.set(kv_tokens)
        self._usage.set(kv_tokens / self._bound)


def generation_metrics(model: str) -> GenerationMetrics:
    return GenerationMetrics(model)
