"""The training statistics a served model version is compared with: the `train` split statistics
StatisticsGen computed in the pipeline run whose Pusher pushed that version (ML Metadata: the
PushedModel artifact's `pushed_version` names the directory under serving_model/), or a file
given explicitly where there is no store (Vertex AI, a copied model)."""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow_data_validation as tfdv

from fmnist import dataset
from monitoring.statistics import Statistics
from tfx_pipeline import metadata
from tfx_pipeline.components.drift_gate import STATS_FILE
from tfx_pipeline.config import PUSHER_ID

STATISTICS_GEN_ID = "StatisticsGen"
PUSHED_VERSION = "pushed_version"  # TFX Pusher's custom property on its PushedModel output


class TrainingStatisticsError(LookupError):
    """No training statistics for a version (the message says what to pass instead)."""


def load_statistics(path: str | os.PathLike) -> Statistics:
    """A DatasetFeatureStatisticsList file: a FeatureStats.pb (binary) or the `Split-train`
    directory that holds one."""
    path = Path(path)
    if path.is_dir():
        path = path / STATS_FILE
    if not path.is_file():
        raise TrainingStatisticsError(f"no statistics file at {path}")
    try:
        return tfdv.load_stats_binary(str(path))
    except Exception as err:  # a truncated or foreign file: protobuf's DecodeError, or TF's
        raise TrainingStatisticsError(f"{path} is not a TFDV statistics file ({type(err).__name__})") from None


def statistics_path(metadata_path: str, pipeline_name: str, version: int) -> str:
    """The FeatureStats.pb of the `train` split of the run that pushed `version`."""
    store = metadata.open_store(metadata_path)
    pushes = [a for a in metadata.all_outputs(metadata_path, pipeline_name, PUSHER_ID, "pushed_model")
              if a.custom_properties[PUSHED_VERSION].string_value == str(version)]
    if not pushes:
        raise TrainingStatisticsError(f"no Pusher run of {pipeline_name} in {metadata_path} pushed version "
                                      f"{version} (pass --training-statistics)")
    run_id = metadata.producing_run(store, pushes[-1])
    found = metadata.latest_execution_outputs(metadata_path, pipeline_name, STATISTICS_GEN_ID, run_id=run_id)
    statistics = found.artifacts.get("statistics", []) if found else []
    if not statistics:
        raise TrainingStatisticsError(f"the run {run_id} that pushed version {version} has no StatisticsGen "
                                      "output (pass --training-statistics)")
    return os.path.join(statistics[0].uri, f"Split-{dataset.TRAIN}", STATS_FILE)


def training_statistics(version: int, metadata_path: str | None, pipeline_name: str | None,
                        override: str | os.PathLike | None = None) -> tuple[Statistics, str]:
    """(statistics, where they came from) for the model `version`: `override` when given, else
    through the ML Metadata store at `metadata_path`. Raises TrainingStatisticsError."""
    if override is not None:
        return load_statistics(override), str(override)
    if metadata_path is None or not Path(metadata_path).is_file():
        raise TrainingStatisticsError(f"no ML Metadata store at {metadata_path} to find version {version}'s "
                                      "training statistics (pass --metadata or --training-statistics)")
    name = pipeline_name or metadata.only_pipeline_name(metadata_path)
    path = statistics_path(metadata_path, name, version)
    return load_statistics(path), path
