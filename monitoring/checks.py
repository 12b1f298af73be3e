"""The checks of one window, all TFDV's validate_statistics with the comparators the schema declares:

- skew: the training statistics of the model version that answered against the window's
  (`skew_comparator`: Jensen-Shannon divergence of `image`'s grey levels);
- class prior: the training labels' frequencies against the served predicted classes (serving
  has no labels; the window's statistics carry the predicted class as `label`, so the same call
  compares them with the label's `skew_comparator`, an L-infinity distance). A shift means the
  model answers classes in other proportions than it was trained on: a changed class mix, or
  inputs it gets wrong;
- drift: the window against the previous window (the schema's `drift_comparator`s, as the
  pipeline's drift gate uses them between spans), on both features;
- schema: the window without `label` against the schema in the SERVING environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from fmnist import features
from monitoring.statistics import Statistics, without_feature
from tfx_pipeline.components.drift_gate import Distance

SKEW, CLASS_PRIOR, DRIFT = "skew", "class prior", "drift"
TRAINING, SERVING = "TRAINING", "SERVING"
_MEASURES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity distance",
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon divergence",
}


@dataclass(frozen=True)
class Score:
    """One comparison: which check, and the distance against the schema's threshold."""

    check: str
    distance: Distance

    @property
    def alert(self) -> bool:
        return self.distance.drifted

    def describe(self) -> str:
        return f"{self.check}: {self.distance.describe()}"


@dataclass(frozen=True)
class CheckResult:
    """The scores of a window and TFDV's anomalies (skew, drift and schema ones merged)."""

    scores: list[Score]
    anomalies: anomalies_pb2.Anomalies
    problems: list[str] = field(default_factory=list)  # one line per anomaly, for the page and the CLI

    @property
    def alert(self) -> bool:
        return bool(self.problems) or any(s.alert for s in self.scores)

    def score(self, check: str, feature: str) -> Score | None:
        return next((s for s in self.scores if s.check == check and s.distance.feature == feature), None)

    def anomalies_text(self) -> str:
        return text_format.MessageToString(self.anomalies)


def _distances(anomalies: anomalies_pb2.Anomalies, kind: str) -> list[Distance]:
    found = []
    for info in anomalies.drift_skew_info:
        for measurement in getattr(info, f"{kind}_measurements"):
            found.append(Distance(".".join(info.path.step), _MEASURES.get(measurement.type, str(measurement.type)),
                                  float(measurement.value), float(measurement.threshold)))
    return found


def _problems(anomalies: anomalies_pb2.Anomalies, check: str) -> list[str]:
    return [f"{check}: {name}: {info.description or info.short_description}"
            for name, info in sorted(anomalies.anomaly_info.items())]


def check_window(serving: Statistics, training: Statistics, schema: schema_pb2.Schema,
                 previous: Statistics | None = None) -> CheckResult:
    """Skew and class prior against `training`, drift against `previous` (skipped when None:
    the first window) and the SERVING schema check, for a window's statistics (monitoring.statistics)."""
    merged = anomalies_pb2.Anomalies()
    scores: list[Score] = []
    problems: list[str] = []
    # validate_statistics compares `statistics` with `serving_statistics`: the training side goes
    # first, in the TRAINING environment, where `label` is expected.
    skew = tfdv.validate_statistics(training, schema, environment=TRAINING, serving_statistics=serving)
    for distance in _distances(skew, "skew"):
        scores.append(Score(CLASS_PRIOR if distance.feature == features.LABEL_KEY else SKEW, distance))
    problems += _problems(skew, "training vs serving")
    if previous is not None:
        drift = tfdv.validate_statistics(serving, schema, environment=TRAINING, previous_statistics=previous)
        scores += [Score(DRIFT, d) for d in _distances(drift, "drift")]
        problems += _problems(drift, "vs previous window")
        merged.MergeFrom(drift)
    schema_check = tfdv.validate_statistics(without_feature(serving), schema, environment=SERVING)
    problems += _problems(schema_check, "serving schema")
    merged.MergeFrom(schema_check)
    merged.MergeFrom(skew)
    return CheckResult(sorted(scores, key=lambda s: (s.check, s.distance.feature)), merged, problems)
