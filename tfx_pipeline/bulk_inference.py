"""The pipeline's batch inference outside a pipeline run: UnlabelledExampleGen's and BulkInferrer's
own executors, in-process, on artifacts in a work directory, built by the same factories the
pipeline uses. What benchmarks/bulk_inference.py times and tests/test_bulk_inference.py checks, and
a way to label images with an already pushed model without running the pipeline."""

from __future__ import annotations

import os
from typing import Any

from google.protobuf import json_format, message
from tfx import v1 as tfx
from tfx.components.bulk_inferrer import executor as bulk_inferrer_executor
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from tfx_pipeline.components import raw_example_gen
from tfx_pipeline.pipeline import bulk_inferrer


def _serialized(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """Exec properties as an orchestrator hands them to an executor: protos as JSON."""
    return {key: json_format.MessageToJson(value, preserving_proto_field_name=True)
            if isinstance(value, message.Message) else value
            for key, value in exec_properties.items() if value is not None}


def _artifact(artifact_type: type, uri: str):
    artifact = artifact_type()
    artifact.uri = uri
    os.makedirs(uri, exist_ok=True)
    return artifact


def unlabelled_examples(input_dir: str, work_dir: str, beam_pipeline_args: list[str] | None = None
                        ) -> standard_artifacts.Examples:
    """Runs UnlabelledExampleGen's executor on the IDX images files of `input_dir`; the Examples
    artifact (split `unlabelled`) under `work_dir`."""
    component = raw_example_gen.unlabelled_example_gen(input_dir)
    examples = _artifact(standard_artifacts.Examples, os.path.join(work_dir, "examples"))
    executor = component.executor_spec.executor_class(BaseBeamExecutor.Context(beam_pipeline_args=beam_pipeline_args))
    executor.Do({}, {"examples": [examples]}, _serialized(component.exec_properties))
    return examples


def model_artifact(saved_model_dir: str, work_dir: str) -> standard_artifacts.Model:
    """A Model artifact whose serving model is `saved_model_dir` (linked, not copied)."""
    model = _artifact(standard_artifacts.Model, os.path.join(work_dir, "model"))
    link = path_utils.serving_model_dir(model.uri)  # where a Model artifact holds its SavedModel
    if not os.path.exists(link):
        os.symlink(os.path.abspath(saved_model_dir), link)
    return model


def infer(examples: standard_artifacts.Examples, model: standard_artifacts.Model, work_dir: str,
          blessed: bool = True, beam_pipeline_args: list[str] | None = None) -> standard_artifacts.InferenceResult:
    """Runs the BulkInferrer's executor as the pipeline configures it; the InferenceResult artifact
    under `work_dir` (`prediction_logs-*.gz`, or nothing when `blessed` is False)."""
    blessing = _artifact(standard_artifacts.ModelBlessing, os.path.join(work_dir, "blessing"))
    blessing.set_int_custom_property("blessed", int(blessed))
    component = bulk_inferrer(tfx.dsl.Channel(type=standard_artifacts.Examples),
                              tfx.dsl.Channel(type=standard_artifacts.Model),
                              tfx.dsl.Channel(type=standard_artifacts.ModelBlessing))
    result = _artifact(standard_artifacts.InferenceResult, os.path.join(work_dir, "inference_result"))
    executor = bulk_inferrer_executor.Executor(BaseBeamExecutor.Context(beam_pipeline_args=beam_pipeline_args))
    executor.Do({"examples": [examples], "model": [model], "model_blessing": [blessing]},
                {"inference_result": [result]}, _serialized(component.exec_properties))
    return result
