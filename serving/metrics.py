"""Prometheus metrics, exposed where TF Serving exposes them: GET /monitoring/prometheus/metrics."""

from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.errors import OK

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "version", "api", "transport"]
        self.requests = Counter("fmnist_serving_requests", "Requests answered", [*labels, "code"],
                                registry=self.registry)
        self.latency = Histogram("fmnist_serving_request_latency_seconds", "Request latency, end to end in the server",
                                 labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("fmnist_serving_batch_size", "Rows per TF call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        # Per loaded version: 0 replayed means it had no warmup file (a failed warmup fails the load).
        self.warmup_requests = Counter("fmnist_serving_warmup_requests", "Warmup requests replayed while loading",
                                       ["model", "version"], registry=self.registry)
        self.warmup_seconds = Gauge("fmnist_serving_warmup_seconds", "Time the last load of a version spent "
                                    "replaying its warmup requests", ["model", "version"], registry=self.registry)

    @contextmanager
    def observe(self, model: str, api: str, transport: str, outcome: dict):
        """Times a request; the caller fills outcome["version"] / outcome["code"] as it learns them.
        `code` is a gRPC status code name on both transports (ServingError.code_name), OK if unset."""
        started = time.perf_counter()
        try:
            yield
        finally:
            version = str(outcome.get("version", ""))
            self.latency.labels(model, version, api, transport).observe(time.perf_counter() - started)
            self.requests.labels(model, version, api, transport, str(outcome.get("code", OK))).inc()

    def record_warmup(self, model: str, version: int, requests: int, seconds: float) -> None:
        """A version's warmup finished (Servable's on_warmup callback)."""
        self.warmup_requests.labels(model, str(version)).inc(requests)
        self.warmup_seconds.labels(model, str(version)).set(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
