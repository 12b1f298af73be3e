"""The server's Prometheus instruments, exposed where TF Serving exposes them: GET
/monitoring/prometheus/metrics (serving.protocol.names.PROMETHEUS_PATH).

Besides TF Serving's request counts and latencies, the model-quality evidence a canary analysis
(serving/release/canary_analysis.py) reads: the predicted class of every answered instance per
version, and the shadow comparisons of stable and canary on the same inputs (serving/server/shadow.py).
The exposed names are the contract between the server and that analysis: serving/protocol/names.py.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fmnist import features
from serving.protocol.errors import OK
from serving.protocol.names import CANARY_SIDE, SHADOW_LABELS, STABLE_SIDE

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)



def predicted_classes(outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The predicted class id per instance of a Predict or Classify answer: the model's class_id
    output, else the argmax of its probabilities (Predict) or scores (Classify, whose classes are
    CLASS_NAMES in order); None for an answer with none of them (nothing to count)."""
    if features.CLASS_ID_OUTPUT in outputs:
        return np.asarray(outputs[features.CLASS_ID_OUTPUT]).reshape(-1).astype(np.int64)
    for name in (features.PROBABILITIES_OUTPUT, "scores"):
        if name in outputs and np.ndim(outputs[name]) == 2:
            return np.asarray(outputs[name]).argmax(axis=1)
    return None


def class_counts(classes: np.ndarray) -> dict[str, int]:
    """{class id as a label value: instances}, the classes that occur only."""
    counts = np.bincount(classes[(classes >= 0) & (classes < features.NUM_CLASSES)], minlength=features.NUM_CLASSES)
    return {str(i): int(n) for i, n in enumerate(counts) if n}


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
        self.predicted_class = Counter("fmnist_serving_predicted_class", "Instances answered (Predict/Classify), "
                                       "by the class the version predicted", ["model", "version", "class"],
                                       registry=self.registry)
        # Shadow traffic: stable's unlabelled requests run again on the canary (serving/server/shadow.py).
        shadow = list(SHADOW_LABELS)
        self.shadow_requests = Counter("fmnist_serving_shadow_requests", "Requests answered by stable and run "
                                       "again on the canary (errors included, drops not)", shadow,
                                       registry=self.registry)
        self.shadow_instances = Counter("fmnist_serving_shadow_instances", "Instances compared between stable and "
                                        "the canary", shadow, registry=self.registry)
        self.shadow_agreements = Counter("fmnist_serving_shadow_agreements", "Compared instances on which the "
                                         "canary predicted stable's class", shadow, registry=self.registry)
        self.shadow_errors = Counter("fmnist_serving_shadow_errors", "Shadow requests the canary failed",
                                     shadow, registry=self.registry)
        self.shadow_dropped = Counter("fmnist_serving_shadow_dropped", "Shadow requests dropped because the "
                                      "shadow queue was full", shadow, registry=self.registry)
        self.shadow_class = Counter("fmnist_serving_shadow_predicted_class", "Compared instances by the class "
                                    "each side predicted (side: stable or canary)", [*shadow, "side", "class"],
                                    registry=self.registry)

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
        """A version's warmup finished (serving.server.warmup.loader's on_warmup callback)."""
        self.warmup_requests.labels(model, str(version)).inc(requests)
        self.warmup_seconds.labels(model, str(version)).set(seconds)

    def record_answer(self, model: str, version: int, outputs: Mapping[str, np.ndarray]) -> None:
        """Counts the classes `version` predicted in an answered Predict/Classify."""
        classes = predicted_classes(outputs)
        if classes is not None:
            for label, count in class_counts(classes).items():
                self.predicted_class.labels(model, str(version), label).inc(count)

    def record_shadow(self, model: str, stable: int, canary: int, stable_classes: np.ndarray,
                      canary_classes: np.ndarray) -> None:
        """One shadow request the canary answered: its instances compared class by class."""
        key = (model, str(stable), str(canary))
        self.shadow_requests.labels(*key).inc()
        self.shadow_instances.labels(*key).inc(len(stable_classes))
        self.shadow_agreements.labels(*key).inc(int(np.sum(stable_classes == canary_classes)))
        for side, classes in ((STABLE_SIDE, stable_classes), (CANARY_SIDE, canary_classes)):
            for label, count in class_counts(classes).items():
                self.shadow_class.labels(*key, side, label).inc(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
