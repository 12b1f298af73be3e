"""Names the server and its clients agree on beyond TF Serving's protocol: the REST header that
says which version answered, where the Prometheus exposition is, and the metric names a canary
analysis reads from it (serving/server/prometheus.py defines the instruments that expose them).
"""

from __future__ import annotations

from typing import Final

from fmnist import features

# Not TF Serving's: this project's REST server names the version that answered :predict/:classify
# here, since TF Serving's JSON bodies have no room for it.
VERSION_HEADER: Final = "X-Model-Version"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# As exposed (prometheus_client adds _total to counters, _bucket/_count/_sum to histograms).
REQUESTS: Final = "fmnist_serving_requests_total"
LATENCY_BUCKET: Final = "fmnist_serving_request_latency_seconds_bucket"
PREDICTED_CLASS: Final = "fmnist_serving_predicted_class_total"
SHADOW_REQUESTS: Final = "fmnist_serving_shadow_requests_total"
SHADOW_INSTANCES: Final = "fmnist_serving_shadow_instances_total"
SHADOW_AGREEMENTS: Final = "fmnist_serving_shadow_agreements_total"
SHADOW_ERRORS: Final = "fmnist_serving_shadow_errors_total"
SHADOW_DROPPED: Final = "fmnist_serving_shadow_dropped_total"
SHADOW_CLASS: Final = "fmnist_serving_shadow_predicted_class_total"
SHADOW_LABELS: Final = ("model", "stable", "canary")
STABLE_SIDE, CANARY_SIDE = features.STABLE_LABEL, features.CANARY_LABEL
