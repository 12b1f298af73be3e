"""The window's verdict as Prometheus gauges: a textfile for node_exporter's textfile collector
(cron runs) and, optionally, a push to a Pushgateway (Cloud Scheduler / Kubernetes CronJob runs)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from monitoring.checks import CLASS_PRIOR, DRIFT, SKEW, CheckResult
from monitoring.live import VersionFigures

JOB = "fmnist_monitor"


def newest_accuracy(history: Iterable[tuple[float, dict[str, float]]]) -> dict[str, tuple[float, float]]:
    """{version: (live accuracy, window end)} of the newest window that judged each version
    (job.accuracy_history's rows): labels arrive late, so the last window is seldom judged yet."""
    newest: dict[str, tuple[float, float]] = {}
    for end, accuracies in history:
        for version, accuracy in accuracies.items():
            if version not in newest or end >= newest[version][1]:
                newest[version] = (accuracy, end)
    return newest


def registry(result: CheckResult, requests: int, images: int, version: int,
             now: float | None = None, alert: bool | None = None,
             live_accuracy: dict[str, tuple[float, float]] | None = None,
             live_figures: Sequence[VersionFigures] = ()) -> CollectorRegistry:
    """The gauges of one window: alert (`alert`, else the checks'), per-feature skew (class prior =
    `label`) and drift scores with their thresholds, request and image counts, when the job last
    ran; per version, the newest live accuracy judged (`live_accuracy`, newest_accuracy()) and the
    window's logged and labelled images (`live_figures`)."""
    gauges = CollectorRegistry()
    Gauge("fmnist_monitor_alert", "1 if the last window alerted (skew, class prior, drift, an anomaly or live "
          "accuracy)", registry=gauges).set(int(result.alert if alert is None else alert))
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
    accuracy = Gauge("fmnist_monitor_live_accuracy", "live accuracy (delayed labels) of the newest window that had "
                     "enough labels, per model version", ["version"], registry=gauges)
    judged_at = Gauge("fmnist_monitor_live_accuracy_window_end_seconds", "end of the window fmnist_monitor_live_"
                      "accuracy comes from, per model version", ["version"], registry=gauges)
    for name, (value, end) in (live_accuracy or {}).items():
        accuracy.labels(name).set(value)
        judged_at.labels(name).set(end)
    logged = Gauge("fmnist_monitor_live_images", "images the version answered in the last window", ["version"],
                   registry=gauges)
    labelled = Gauge("fmnist_monitor_live_labelled", "of those, images whose label came back so far", ["version"],
                     registry=gauges)
    for figures in live_figures:
        logged.labels(figures.version).set(figures.tally.images)
        labelled.labels(figures.version).set(figures.tally.labelled)
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
