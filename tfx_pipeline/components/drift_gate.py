"""Stops a run whose span drifted from the previous accepted span, before Transform.

TFX 1.16's ExampleValidator compares statistics with a schema only; the drift comparators that
`schema/schema.pbtxt` declares (L-infinity on the label distribution, Jensen-Shannon divergence
on the pixel values) need the previous span's statistics, which TFDV's `validate_statistics`
takes as `previous_statistics`. This gate runs it on the `train` split of the new span against
the last span it accepted, fails with one line naming the spans, feature, distance and threshold,
and otherwise publishes the span's statistics as `SpanStatistics`: the next span's baseline, and
the set of accepted spans that the local rolling window (tfx_pipeline.span_window) trains on.
The first span has no baseline and passes on the schema alone (ExampleValidator checked it).
"""

import json
import os
from dataclasses import asdict, dataclass

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact, standard_artifacts
from tfx.utils import io_utils

from fmnist import dataset

COMPARED_SPLIT = dataset.TRAIN
DRIFT_FILE = "drift.json"
STATS_FILE = "FeatureStats.pb"
_DRIFT_TYPES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity distance",
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon divergence",
}


class SpanStatistics(artifact.Artifact):
    """The statistics of a span that passed the drift gate (custom property SPAN says which: the
    Vertex compiler rejects declared properties on a type it does not know)."""

    TYPE_NAME = "fmnist.SpanStatistics"


SPAN = example_gen_utils.SPAN_PROPERTY_NAME  # ExampleGen's driver records it as a custom property too


def span_of(artifact_: artifact.Artifact) -> int:
    """The span of an Examples or SpanStatistics artifact."""
    return artifact_.get_int_custom_property(SPAN)


class DataDriftError(RuntimeError):
    """The new span's distribution moved further from the previous span's than the schema allows."""


@dataclass(frozen=True)
class Distance:
    """One drift comparison: feature, measure, value and the schema's threshold."""

    feature: str
    measure: str
    value: float
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.value > self.threshold

    def describe(self) -> str:
        return f"{self.feature} {self.measure} {self.value:.4f} {'>' if self.drifted else '<='} {self.threshold:g}"


def drift_distances(current, previous, schema) -> list[Distance]:
    """Every drift comparator of `schema` evaluated between two DatasetFeatureStatisticsLists."""
    anomalies = tfdv.validate_statistics(current, schema, previous_statistics=previous)
    distances = []
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for measurement in info.drift_measurements:
            distances.append(Distance(feature, _DRIFT_TYPES.get(measurement.type, str(measurement.type)),
                                      float(measurement.value), float(measurement.threshold)))
    return sorted(distances, key=lambda d: d.feature)


def read_drift(accepted) -> list[Distance]:
    """The distances a SpanStatistics artifact (or its ML Metadata record) was accepted with ([]
    for a first span)."""
    with fileio.open(os.path.join(accepted.uri, DRIFT_FILE)) as stream:
        return [Distance(**row) for row in json.load(stream)["distances"]]


def _split_statistics(stats: artifact.Artifact):
    return stats_artifact_utils.load_statistics(stats, COMPARED_SPLIT).proto()


@component
def DriftGate(
    examples: InputArtifact[standard_artifacts.Examples],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    schema: InputArtifact[standard_artifacts.Schema],
    accepted: OutputArtifact[SpanStatistics],
    previous: InputArtifact[SpanStatistics] = None,
) -> None:
    current = _split_statistics(statistics)
    distances = []
    baseline_file = os.path.join(previous.uri, f"Split-{COMPARED_SPLIT}", STATS_FILE) if previous else ""
    if previous is not None and not fileio.exists(baseline_file):
        previous = None  # Vertex's DriftBaseline found no trainable span yet: an empty artifact
    if previous is not None:
        baseline = tfdv.load_stats_binary(baseline_file)
        schema_proto = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema.uri))
        distances = drift_distances(current, baseline, schema_proto)
        drifted = [d for d in distances if d.drifted]
        if drifted:
            raise DataDriftError(f"span {span_of(examples)} drifted from span {span_of(previous)} "
                                 f"({COMPARED_SPLIT} split): {'; '.join(d.describe() for d in drifted)}; "
                                 "stopping before Transform")
    accepted.set_int_custom_property(SPAN, span_of(examples))
    for distance in distances:  # queryable in ML Metadata
        accepted.set_float_custom_property(f"{distance.feature}_drift", distance.value)
    split_dir = os.path.join(accepted.uri, f"Split-{COMPARED_SPLIT}")
    fileio.makedirs(split_dir)
    io_utils.write_bytes_file(os.path.join(split_dir, STATS_FILE), current.SerializeToString())
    summary = {"span": span_of(examples), "previous_span": span_of(previous) if previous is not None else None,
               "distances": [asdict(d) for d in distances]}
    io_utils.write_string_file(os.path.join(accepted.uri, DRIFT_FILE), json.dumps(summary, indent=2))
