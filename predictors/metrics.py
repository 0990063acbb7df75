"""Prometheus metrics beyond kserve's own, served on the same ``/metrics`` endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
