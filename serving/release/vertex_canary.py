"""Canary analysis on a Vertex AI endpoint: the same Evidence, checks and decisions as on a
`fmnist serve` (serving/release/canary_analysis.py), measured from Google Cloud instead of the server's
Prometheus metrics. `VertexSource.analyze` is the Measure that auto_release() takes for a
VertexRelease (`fmnist release analyze|auto --vertex-endpoint ...`, deploy/canary/job.yaml).

Where each part of the Evidence comes from, over the bake window [start, end]:

- requests, errors and latency of each deployed model: Cloud Monitoring's Vertex AI metrics
  (https://cloud.google.com/monitoring/api/metrics_gcp#gcp-aiplatform; the Vertex docs' "Monitor
  model endpoint traffic" lists the same four prediction/online metrics) on the monitored resource
  aiplatform.googleapis.com/Endpoint (resource label endpoint_id), one series per metric label
  deployed_model_id: prediction_count (requests), error_count (errors) and prediction_latencies, a
  DELTA distribution in milliseconds, whose bucket counts become Evidence's cumulative (le, count)
  buckets in seconds;
- the predicted-class distribution of each version: the endpoint's request-response logging table
  in BigQuery (fmnist.bigquery.read_request_log_rows: deployed_model_id, logging_time,
  request_payload, response_payload), parsed as `fmnist monitor --bigquery-table` parses it
  (serving.server.request_log.row_arrays, fmnist.answers.predicted_classes);
- agreement: a Vertex endpoint cannot mirror traffic, and a :predict call cannot pick a deployed
  model (PredictRequest has only endpoint, instances and parameters; the SDK's
  Endpoint.invoke(deployed_model_id=...) overrides the split, but only on dedicated endpoints and
  for custom routes, not on the shared endpoint the Vertex Pusher deploys to). So a sample of the
  instances stable answered during the bake is *replayed*: `canary_predict(images) -> classes`,
  injected by the caller (the CLI loads the canary's SavedModel from its Model Registry
  artifact_uri with TensorFlow, cli/canary_replay.py), answers them, and each is compared with the
  class stable logged. Those pairs are the shadow_instances / shadow_agreements / shadow_classes.
  A replay is not traffic the deployed canary served, so it never counts toward the bake's
  requests (shadow_requests stays 0) nor its errors.

Why serving/: everything it reads is in serving and fmnist (the log query in fmnist.bigquery, the
payload parsing in serving.server.request_log), and only serving and the CLI may build serving's
Evidence (monitoring/ may not import serving, .importlinter); TensorFlow is never imported here
(the tf-free-client contract), the Google Cloud clients are passed in.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from fmnist import answers, bigquery, features
from serving.protocol import names
from serving.release.canary_analysis import Analysis, AnalysisError, Bake, Evidence, LabelledOutcome, Policy, bake_until
from serving.release.labels import Version

METRIC_PREFIX: Final = "aiplatform.googleapis.com/prediction/online/"
PREDICTION_COUNT: Final = METRIC_PREFIX + "prediction_count"
ERROR_COUNT: Final = METRIC_PREFIX + "error_count"
PREDICTION_LATENCIES: Final = METRIC_PREFIX + "prediction_latencies"  # distribution, milliseconds
ENDPOINT_RESOURCE: Final = "aiplatform.googleapis.com/Endpoint"
# prediction_latencies has one series per latency_type (overhead, model, total): the end-to-end one
# is what a client waits for, and summing the three would count each request thrice.
TOTAL_LATENCY: Final = "total"
# Vertex samples these metrics every 60 s: polling them faster only repeats the same answer.
POLL_SECONDS: Final = 30.0
DEFAULT_BAKE: Final = Bake(poll_seconds=POLL_SECONDS)
DEFAULT_POLICY: Final = Policy()
REPLAY_INSTANCES: Final = 500  # stable's logged instances the canary answers again, at most
_SECOND = datetime.timedelta(seconds=1)  # the shortest window: Monitoring and the log query want end > start
_ENDPOINT_NAME = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/endpoints/(?P<id>[^/]+)$")

CanaryPredict = Callable[[np.ndarray], Sequence[int]]  # images float32 [N, 28, 28] -> class ids [N]


def endpoint_parts(endpoint: str) -> tuple[str, str]:
    """(project, endpoint ID) of projects/P/locations/R/endpoints/ID; AnalysisError otherwise."""
    match = _ENDPOINT_NAME.match(endpoint)
    if not match:
        raise AnalysisError(f"{endpoint!r} is not an endpoint resource name projects/P/locations/R/endpoints/ID")
    return match["project"], match["id"]


def series_filter(metric: str, endpoint_id: str, deployed_model_id: Version) -> str:
    """The Cloud Monitoring filter for one deployed model's series of `metric` on one endpoint."""
    text = (f'metric.type = "{metric}" AND resource.type = "{ENDPOINT_RESOURCE}" '
            f'AND resource.labels.endpoint_id = "{endpoint_id}" '
            f'AND metric.labels.deployed_model_id = "{deployed_model_id}"')
    if metric == PREDICTION_LATENCIES:
        text += f' AND metric.labels.latency_type = "{TOTAL_LATENCY}"'
    return text


def upper_bounds(options: Any) -> list[float]:
    """The upper bound of each bucket of a google.api.Distribution.BucketOptions, the overflow
    bucket's +inf last (bucket 0 is the underflow of linear and exponential buckets)."""
    kind = options.WhichOneof("options")
    if kind == "explicit_buckets":
        finite = list(options.explicit_buckets.bounds)
    elif kind == "exponential_buckets":
        spec = options.exponential_buckets
        finite = [spec.scale * spec.growth_factor ** i for i in range(spec.num_finite_buckets + 1)]
    elif kind == "linear_buckets":
        spec = options.linear_buckets
        finite = [spec.offset + spec.width * i for i in range(spec.num_finite_buckets + 1)]
    else:
        finite = []
    return [float(bound) for bound in finite] + [math.inf]


def cumulative_buckets(distributions: Iterable[Any], scale: float = 1e-3) -> tuple[tuple[float, float], ...]:
    """Evidence's cumulative buckets ((le, count), +inf last; le times `scale`: milliseconds to
    seconds) of the sum of DELTA distribution points. AnalysisError when points bucket differently."""
    bounds: list[float] | None = None
    counts: list[float] = []
    for distribution in distributions:
        mine = upper_bounds(distribution.bucket_options)
        if bounds is not None and mine != bounds:
            raise AnalysisError(f"{PREDICTION_LATENCIES} changed its buckets during the bake: analyze again")
        bounds = mine
        counts += [0.0] * (len(mine) - len(counts))
        for index, count in enumerate(distribution.bucket_counts):  # trailing empty buckets may be left out
            counts[min(index, len(mine) - 1)] += count
    if bounds is None:
        return ()
    return tuple(zip([bound * scale for bound in bounds], np.cumsum(counts).tolist(), strict=True))


@dataclass(frozen=True)
class Served:
    """What Cloud Monitoring counted for one deployed model over a window."""

    requests: int
    errors: int
    latency: tuple[tuple[float, float], ...]  # cumulative (le seconds, count)


@dataclass
class VertexSource:
    """Where a Vertex endpoint's evidence comes from: `endpoint` (its resource name), its logging
    `table` (PROJECT.DATASET.TABLE), a monitoring_v3.MetricServiceClient (`metrics`), a
    bigquery.Client (`bigquery`) and the canary's replay (`canary_predict`, see the module doc);
    `replay`: how many of stable's logged instances it answers at most. `now` is the wall clock
    the windows are read by."""

    endpoint: str
    table: str
    metrics: Any
    bigquery: Any
    canary_predict: CanaryPredict
    replay: int = REPLAY_INSTANCES
    now: Callable[[], datetime.datetime] = field(default=lambda: datetime.datetime.now(datetime.UTC))

    def __post_init__(self) -> None:
        self.project, self.endpoint_id = endpoint_parts(self.endpoint)
        bigquery.check_table_id(self.table)
        if self.replay < 1:
            raise AnalysisError(f"the replay needs at least 1 instance, got {self.replay}")

    # -- Cloud Monitoring -------------------------------------------------------------------------
    def _points(self, metric: str, deployed: Version, start: datetime.datetime, end: datetime.datetime) -> list:
        from google.cloud import monitoring_v3

        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}", filter=series_filter(metric, self.endpoint_id, deployed),
            interval=monitoring_v3.TimeInterval(start_time=start, end_time=max(end, start + _SECOND)),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL)
        return [point.value for series in self.metrics.list_time_series(request=request) for point in series.points]

    def requests(self, deployed: Version, start: datetime.datetime, end: datetime.datetime,
                 metric: str = PREDICTION_COUNT) -> int:
        """The sum of a count metric (prediction_count, error_count) of `deployed` in [start, end]."""
        return int(sum(value.int64_value for value in self._points(metric, deployed, start, end)))

    def served(self, deployed: Version, start: datetime.datetime, end: datetime.datetime) -> Served:
        """Requests, errors and latency of `deployed` in [start, end]."""
        return Served(self.requests(deployed, start, end), self.requests(deployed, start, end, ERROR_COUNT),
                      cumulative_buckets(value.distribution_value
                                         for value in self._points(PREDICTION_LATENCIES, deployed, start, end)))

    # -- the logging table ------------------------------------------------------------------------
    def answered(self, start: datetime.datetime, end: datetime.datetime,
                 deployed: Iterable[Version]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{deployed model ID: (images float32 [N, 28, 28], classes int64 [N])} that the logging
        table holds for each of `deployed` in [start, end). A row that is not Fashion-MNIST
        :predict instances and predictions raises AnalysisError naming it."""
        from serving.protocol.errors import ServingError
        from serving.protocol.vertex_rows import row_arrays

        wanted = {str(version): ([], []) for version in deployed}
        rows = bigquery.read_request_log_rows(self.table, start, max(end, start + _SECOND),
                                              self.bigquery)
        for row in rows:
            found = wanted.get(str(row.get("deployed_model_id")))
            if found is None:
                continue
            try:
                inputs, outputs = row_arrays(row)
                if not outputs:
                    continue  # Vertex logs a failed call's request alone
                images = np.asarray(inputs[features.IMAGES_INPUT], np.float32).reshape(-1, *features.IMAGE_SHAPE)
                classes = answers.predicted_classes(outputs, len(images))
            except (ServingError, ValueError, KeyError) as err:
                raise AnalysisError(f"{self.table}: row {row.get('request_id')} of deployed model "
                                    f"{row.get('deployed_model_id')}: {err}") from None
            found[0].append(images)
            found[1].append(classes)
        return {version: (np.concatenate(images) if images else np.zeros((0, *features.IMAGE_SHAPE), np.float32),
                          np.concatenate(classes) if classes else np.zeros(0, np.int64))
                for version, (images, classes) in wanted.items()}

    # -- the evidence -----------------------------------------------------------------------------
    def evidence(self, stable: Version, canary: Version, start: datetime.datetime,
                 end: datetime.datetime) -> Evidence:
        """The Evidence of [start, end]: see the module doc for where each count comes from."""
        stable_served, canary_served = self.served(stable, start, end), self.served(canary, start, end)
        logged = self.answered(start, end, (stable, canary))
        images, stable_classes = _sample(*logged[str(stable)], self.replay)
        replayed = np.asarray(self.canary_predict(images) if len(images) else [], np.int64).reshape(-1)
        if replayed.shape != stable_classes.shape:
            raise AnalysisError(f"the canary's replay answered {replayed.size} of {len(images)} instances")
        return Evidence(
            canary_requests=canary_served.requests, canary_errors=canary_served.errors,
            shadow_requests=0, shadow_errors=0, shadow_dropped=0,
            shadow_instances=len(replayed), shadow_agreements=int((replayed == stable_classes).sum()),
            stable_latency=stable_served.latency, canary_latency=canary_served.latency,
            shadow_classes={names.STABLE_SIDE: _counts(stable_classes), names.CANARY_SIDE: _counts(replayed)},
            answered_classes={names.STABLE_SIDE: _counts(logged[str(stable)][1]),
                              names.CANARY_SIDE: _counts(logged[str(canary)][1])})

    def analyze(self, model: str, stable: Version, canary: Version, policy: Policy = DEFAULT_POLICY,
                bake: Bake = DEFAULT_BAKE, outcomes: Sequence[LabelledOutcome] = (),
                clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Analysis:
        """Bakes the canary from now: polls its prediction_count every bake.poll_seconds until it
        reaches bake.requests or bake.seconds have passed, then judges the window's evidence.
        A Measure for auto_release (its first six arguments)."""
        start = self.now()
        elapsed = bake_until(lambda: self.requests(canary, start, self.now()), bake, clock, sleep)
        evidence = self.evidence(stable, canary, start, self.now())
        return Analysis.judged(model, stable, canary, elapsed, bake, evidence, policy, outcomes)


def _sample(images: np.ndarray, classes: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` of the instances, evenly spread over the window (deterministic: a rerun on
    the same window replays the same ones)."""
    if len(classes) <= limit:
        return images, classes
    rows = np.linspace(0, len(classes) - 1, limit).round().astype(int)
    return images[rows], classes[rows]


def _counts(classes: np.ndarray) -> tuple[int, ...]:
    valid = classes[(classes >= 0) & (classes < features.NUM_CLASSES)]
    return tuple(int(n) for n in np.bincount(valid, minlength=features.NUM_CLASSES))

