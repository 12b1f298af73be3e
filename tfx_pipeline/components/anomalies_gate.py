"""Stops the pipeline before Transform when ExampleValidator found anomalies.

ExampleValidator only records anomalies; nothing downstream reads them. This gate runs between
ExampleValidator and Transform and fails with one line per anomaly, naming split, feature and
what was wrong, so bad data never reaches training or the serving directory.
"""


import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts

SCHEMA_DIFF_FILE = "SchemaDiff.pb"


class DataAnomaliesError(RuntimeError):
    """The examples do not match the curated schema."""


def describe_anomalies(artifact: standard_artifacts.ExampleAnomalies) -> "list[str]":
    """One human-readable line per anomaly, across all splits of the artifact."""
    problems = []
    for split in artifact_utils.decode_split_names(artifact.split_names):
        anomalies = anomalies_pb2.Anomalies()
        path = os.path.join(artifact.uri, f"Split-{split}", SCHEMA_DIFF_FILE)
        with fileio.open(path, "rb") as stream:
            anomalies.ParseFromString(stream.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            for reason in info.reason:
                problems.append(
                    f"split '{split}', feature '{feature}': {reason.short_description}: "
                    f"{reason.description}"
                )
        for reason in anomalies.dataset_anomaly_info.reason:
            problems.append(f"split '{split}', dataset: {reason.short_description}: {reason.description}")
    return problems


@component
def AnomaliesGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies]) -> None:
    problems = describe_anomalies(anomalies)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise DataAnomaliesError(
            f"ExampleValidator found {len(problems)} anomalies; stopping before Transform:\n{listing}"
        )
