"""The span verdicts' three steps on Vertex AI Pipelines (tfx_pipeline.vertex_verdicts says why
they exist; locally the resolvers of tfx_pipeline.span_window do the same from ML Metadata):

- DriftBaseline, before the DriftGate: the statistics of the newest trainable span, copied into
  a SpanStatistics artifact (empty when there is none: the first span passes on the schema alone);
- SpanWindow, after the DriftGate: this run's span and the newest window_spans - 1 trainable
  ones merged into one Examples artifact (their split files copied, renamed by span), which the
  Transform analyses and the Trainer learns from;
- SpanVerdictRecorder, the exit handler: runs after every run, failed or not, reads what the run's
  tasks wrote (aiplatform.PipelineJob) and records the span's verdict with the local rule.
"""

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.standard_component_specs import EXAMPLES_KEY

from tfx_pipeline.components.drift_gate import COMPARED_SPLIT, SPAN, STATS_FILE, SpanStatistics, span_of
from tfx_pipeline.config import BLESSING_GATE_ID, DRIFT_GATE_ID, EVALUATOR_ID, EXAMPLE_GEN_ID, SERVING_VALIDATOR_ID
from tfx_pipeline.span_verdicts import ANOMALOUS, DRIFTED, decide
from tfx_pipeline.vertex_verdicts import SpanRecord, VertexVerdicts, baseline, window

ANOMALIES_GATE_ID = "AnomaliesGate"  # the component's default id (pipeline.py gives it no other)
WINDOW_SPANS = "window_spans"  # SpanWindow's custom property: the spans merged, oldest first
RECORDED_BY = "pipeline run (Vertex exit handler)"


# -- the drift baseline and the window ---------------------------------------------------------
def copy_baseline(record: SpanRecord | None, out: Any) -> None:
    """Copies `record`'s span statistics into SpanStatistics `out` (nothing when None)."""
    if record is None:
        out.set_int_custom_property(SPAN, -1)
        return
    split = f"Split-{COMPARED_SPLIT}"
    fileio.makedirs(os.path.join(out.uri, split))
    fileio.copy(os.path.join(record.statistics_uri, split, STATS_FILE), os.path.join(out.uri, split, STATS_FILE),
                overwrite=True)
    out.set_int_custom_property(SPAN, record.verdict.span)


def merge_examples(sources: Sequence[tuple[int, str]], current: Any, out: Any) -> None:
    """Copies the split files of each (span, Examples URI) in `sources`, then of `current` (this run's
    Examples artifact), into Examples `out` as Split-<name>/span-<span>-<file>; `out` takes the
    current artifact's splits, span and format properties."""
    splits = artifact_utils.decode_split_names(current.split_names)
    for span, uri in [*sources, (span_of(current), current.uri)]:
        for split in splits:
            source_dir, target_dir = os.path.join(uri, f"Split-{split}"), os.path.join(out.uri, f"Split-{split}")
            fileio.makedirs(target_dir)
            for name in fileio.listdir(source_dir):
                fileio.copy(os.path.join(source_dir, name), os.path.join(target_dir, f"span-{span}-{name}"),
                            overwrite=True)
    out.split_names = current.split_names
    for key, value in current.mlmd_artifact.custom_properties.items():  # span, version, payload_format, ...
        out.mlmd_artifact.custom_properties[key].CopyFrom(value)
    out.set_string_custom_property(WINDOW_SPANS, ",".join(str(span) for span, _ in [*sources, (span_of(current), "")]))


@component
def DriftBaseline(baseline_statistics: OutputArtifact[SpanStatistics], project: Parameter[str],
                  region: Parameter[str], pipeline_name: Parameter[str]) -> None:
    copy_baseline(baseline(VertexVerdicts(project, region, pipeline_name).current()), baseline_statistics)


@component
def SpanWindow(examples: InputArtifact[standard_artifacts.Examples],
               window_examples: OutputArtifact[standard_artifacts.Examples],
               project: Parameter[str], region: Parameter[str], pipeline_name: Parameter[str],
               num_spans: Parameter[int]) -> None:
    chosen = window(VertexVerdicts(project, region, pipeline_name).current(), span_of(examples), num_spans)
    merge_examples([(r.verdict.span, r.examples_uri) for r in chosen], examples, window_examples)


# -- the verdict of a finished run -------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """What one task of a PipelineJob did: its state and its outputs' (uri, metadata) by key."""

    state: str
    outputs: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]] = field(default_factory=dict)
    error: str = ""

    def output(self, key: str) -> tuple[str, Mapping[str, Any]] | None:
        found = self.outputs.get(key) or ()
        return found[0] if found else None


def job_tasks(resource_name: str, aiplatform: Any = None) -> dict[str, Task]:
    """{task name: Task} of PipelineJob `resource_name` (the boundary with Vertex: tests fake it)."""
    if aiplatform is None:
        from google.cloud import aiplatform
    job = aiplatform.PipelineJob.get(resource_name)
    tasks = {}
    for detail in job.task_details:
        outputs = {key: [(a.uri, dict(a.metadata)) for a in listed.artifacts] for key, listed in detail.outputs.items()}
        error = getattr(getattr(detail, "error", None), "message", "") or ""
        tasks[detail.task_name] = Task(getattr(detail.state, "name", str(detail.state)), outputs, error)
    return tasks


def verdict_of(tasks: Mapping[str, Task], error: str) -> tuple[int, str, str, str, str] | None:
    """(span, verdict, reason, examples URI, statistics URI) of a finished run from its tasks, by
    span_verdicts.decide(); `error` is the job's error message. None when nothing was ingested or
    the run failed before a step the rule needs."""
    gen = tasks.get(EXAMPLE_GEN_ID)
    ingested = gen.output(EXAMPLES_KEY) if gen else None
    if ingested is None:
        return None
    examples_uri, examples_meta = ingested
    span = int(examples_meta.get(SPAN, 0))
    stopped_by, stop_reason = None, ""
    for task_id, verdict in ((ANOMALIES_GATE_ID, ANOMALOUS), (DRIFT_GATE_ID, DRIFTED)):
        if task_id in tasks and tasks[task_id].state == "FAILED":
            stopped_by = verdict
            stop_reason = f"{task_id} stopped the run (its log has the line): {tasks[task_id].error or error}"
    drift = tasks.get(DRIFT_GATE_ID)
    accepted = drift.output("accepted") if drift else None

    def metadata_of(task_id: str, key: str) -> Mapping[str, Any] | None:
        found = tasks[task_id].output(key) if task_id in tasks else None
        return found[1] if found else None

    evaluation = tasks[EVALUATOR_ID].output("evaluation") if EVALUATOR_ID in tasks else None
    found = decide(span, stopped_by, stop_reason,
                   metadata_of(BLESSING_GATE_ID, "blessing"), evaluation[0] if evaluation else None,
                   metadata_of(SERVING_VALIDATOR_ID, "blessing"))
    if found is None:
        return None
    return (*found, examples_uri, accepted[0] if accepted and stopped_by is None else "")


def record_run(final_status: str, project: str, region: str, pipeline_name: str, aiplatform: Any = None) -> str:
    """Records the verdict of the run `final_status` (a PipelineTaskFinalStatus as JSON) describes;
    returns one line saying what was recorded."""
    status = json.loads(final_status)
    tasks = job_tasks(status["pipelineJobResourceName"], aiplatform)
    found = verdict_of(tasks, status.get("error", {}).get("message", ""))
    if found is None:
        return f"{status['pipelineJobResourceName']} ({status.get('state')}): no verdict (nothing ingested or failed)"
    span, verdict, reason, examples_uri, statistics_uri = found
    VertexVerdicts(project, region, pipeline_name, aiplatform).record(span, verdict, reason, examples_uri,
                                                                      statistics_uri, by=RECORDED_BY)
    return f"span {span}: {verdict} ({reason})"


@component
def SpanVerdictRecorder(final_status: Parameter[str], project: Parameter[str], region: Parameter[str],
                        pipeline_name: Parameter[str]) -> None:
    print(record_run(final_status, project, region, pipeline_name))
