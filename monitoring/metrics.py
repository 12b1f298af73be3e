"""The window's verdict as Prometheus gauges: a textfile for node_exporter's textfile collector
(cron runs) and, optionally, a push to a Pushgateway (Cloud Scheduler / Kubernetes CronJob runs)."""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from monitoring.checks import CLASS_PRIOR, DRIFT, SKEW, CheckResult

JOB = "fmnist_monitor"


def registry(result: CheckResult, requests: int, images: int, version: int,
             now: float | None = None) -> CollectorRegistry:
    """The gauges of one window: alert, per-feature skew (class prior = `label`) and drift scores
    with their thresholds, request and image counts, and when the job last ran."""
    gauges = CollectorRegistry()
    Gauge("fmnist_monitor_alert", "1 if the last window alerted (skew, class prior, drift or an anomaly)",
          registry=gauges).set(int(result.alert))
    # The class prior is the skew of `label` (predicted classes vs training labels).
    kinds = {SKEW: "skew", CLASS_PRIOR: "skew", DRIFT: "drift"}
    scores = {name: Gauge(f"fmnist_monitor_{name}_score", f"{name} distance of the last window, per feature",
                          ["feature"], registry=gauges) for name in ("skew", "drift")}
    thresholds = {name: Gauge(f"fmnist_monitor_{name}_threshold", f"the schema's {name} threshold, per feature",
                              ["feature"], registry=gauges) for name in ("skew", "drift")}
    for item in result.scores:
        scores[kinds[item.check]].labels(item.distance.feature).set(item.distance.value)
        thresholds[kinds[item.check]].labels(item.distance.feature).set(item.distance.threshold)
    Gauge("fmnist_monitor_anomalies", "TFDV anomalies of the last window", registry=gauges).set(len(result.problems))
    Gauge("fmnist_monitor_requests", "logged calls in the last window", registry=gauges).set(requests)
    Gauge("fmnist_monitor_images", "images in the last window", registry=gauges).set(images)
    Gauge("fmnist_monitor_model_version", "the model version the last window was compared for",
          registry=gauges).set(version)
    Gauge("fmnist_monitor_last_run_timestamp_seconds", "when the monitor last checked a window",
          registry=gauges).set(time.time() if now is None else now)
    return gauges


def publish(gauges: CollectorRegistry, textfiles: list[str | os.PathLike], pushgateway: str | None = None) -> None:
    """Writes the textfile(s) (atomically: write_to_textfile renames a temp file) and pushes."""
    for path in textfiles:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_to_textfile(str(path), gauges)
    if pushgateway:
        push_to_gateway(pushgateway, job=JOB, registry=gauges)
