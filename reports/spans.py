"""What one pipeline run did with its span, read back from ML Metadata: the span and its size,
the drift distances the gate measured, the spans the model was trained on and whether it started
from the previous blessed model, its accuracies, the blessing and the pushed version.

The continuous-training loop (`fmnist watch`) prints one line of it per span; tests and the
closing-note table read the same records.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import tensorflow as tf
import tensorflow_data_validation as tfdv
from ml_metadata.proto import metadata_store_pb2

from modules.trainer import TRAINING_SUMMARY_FILE
from reports.evaluation import EvaluationNotFoundError, load_latest
from tfx_pipeline import label_agreement, metadata, span_verdicts
from tfx_pipeline.components.drift_gate import SPAN, STATS_FILE, Distance, read_drift
from tfx_pipeline.config import BLESSING_SPLIT, DRIFT_GATE_ID, EXAMPLE_GEN_ID, REPORTED_SPLIT, TRAINER_ID

_INPUT = [metadata_store_pb2.Event.INPUT]


@dataclass(frozen=True)
class SpanRun:
    """One pipeline run, seen from its span. Fields are None where the run stopped before them."""

    run_id: str
    span: int | None
    examples: int | None  # train + eval of the span
    distances: list[Distance] = field(default_factory=list)
    trained_spans: list[int] | None = None
    warm_start_from: str | None = None  # the base model's URI when the weights came from it
    train_seconds: float | None = None
    eval_accuracy: float | None = None
    test_accuracy: float | None = None
    golden_accuracy: float | None = None
    golden_stable_accuracy: float | None = None  # the stable model's, when the golden gate judged
    golden_status: str | None = None  # passed | failed | not judged
    labels_status: str | None = None  # the label check: agree | disagree | not judged
    blessed: bool | None = None
    pushed_version: str | None = None
    verdict: str | None = None  # tfx_pipeline.span_verdicts: the span's verdict now
    verdict_reason: str = ""

    def line(self, stopped: str | None = None) -> str:
        """The loop's one summary line for this span."""
        size = f"span {self.span}: {self.examples:,} examples" if self.examples else f"span {self.span}"
        if stopped:  # the gate's line names the distances that stopped it
            return f"{size}; stopped: {stopped}"
        drift = ", ".join(f"{d.feature} {d.value:.4f}/{d.threshold:g}" for d in self.distances) or "first span"
        head = f"{size}; drift {drift}"
        start = "warm" if self.warm_start_from else "cold"
        trained = "+".join(map(str, self.trained_spans or []))
        seconds = f" {self.train_seconds:.0f}s" if self.train_seconds is not None else ""
        accuracy = f"eval {self.eval_accuracy:.4f}" if self.eval_accuracy is not None else "eval -"
        if self.golden_accuracy is not None:
            accuracy += f", {self.golden_line()}"
        if self.labels_status == label_agreement.DISAGREE:
            accuracy += ", labels disagree with golden"
        if self.test_accuracy is not None:
            accuracy += f", test {self.test_accuracy:.4f}"
        blessing = {True: "blessed", False: "NOT blessed", None: "not judged"}[self.blessed]
        pushed = f"pushed version {self.pushed_version}" if self.pushed_version else "nothing pushed"
        verdict = f"; span {self.verdict}" if self.verdict else ""
        return f"{head}; {start} on spans {trained}{seconds}; {accuracy}; {blessing}; {pushed}{verdict}"

    def golden_line(self) -> str:
        """The golden gate in a few words: the candidate's golden accuracy against stable's."""
        if self.golden_accuracy is None:
            return "golden -"
        if self.golden_stable_accuracy is None:
            return f"golden {self.golden_accuracy:.4f} (no stable model yet)"
        return f"golden {self.golden_accuracy:.4f} vs stable {self.golden_stable_accuracy:.4f} ({self.golden_status})"


def span_run(metadata_path: str, pipeline_name: str, run_id: str | None = None) -> SpanRun:
    """The SpanRun of pipeline run `run_id` (default: the latest run)."""
    store = metadata.open_store(metadata_path)
    run_id = run_id or metadata.latest_run_id(store, pipeline_name)
    if run_id is None:
        raise LookupError(f"pipeline {pipeline_name!r} has no runs in {metadata_path}")

    def outputs(component: str) -> dict[str, list]:
        found = metadata.latest_execution_outputs(metadata_path, pipeline_name, component, run_id=run_id)
        return {"__execution__": [found.execution], **found.artifacts} if found else {}

    def inputs(execution_outputs: dict[str, list]) -> dict[str, list]:
        (execution,) = execution_outputs["__execution__"]
        return metadata.execution_artifacts(store, execution.id, _INPUT)

    values: dict = {"run_id": run_id, "span": None, "examples": None}
    gen = outputs(EXAMPLE_GEN_ID)
    if gen:
        (examples,) = gen["examples"]
        values["span"] = examples.custom_properties[SPAN].int_value
    statistics = outputs("StatisticsGen")
    if statistics:
        values["examples"] = _examples_in(statistics["statistics"][0].uri)
    gate = outputs(DRIFT_GATE_ID)
    if gate:
        values["distances"] = read_drift(gate["accepted"][0])
    trainer = outputs(TRAINER_ID)
    if trainer:
        trainer_inputs = inputs(trainer)
        values["trained_spans"] = _spans_trained_on(store, trainer_inputs["examples"])
        summary = training_summary(trainer["model_run"][0].uri)
        values["warm_start_from"] = summary.get("warm_start_from")
        values["train_seconds"] = summary.get("train_seconds")
    try:
        evaluation = load_latest(metadata_path, pipeline_name, run_id=run_id)
    except EvaluationNotFoundError:
        evaluation = None
    if evaluation is not None:
        values["blessed"] = evaluation.blessed
        values["eval_accuracy"] = evaluation.splits[BLESSING_SPLIT].overall["accuracy"]
        if REPORTED_SPLIT in evaluation.splits:
            values["test_accuracy"] = evaluation.splits[REPORTED_SPLIT].overall["accuracy"]
        golden = evaluation.golden
        if golden is not None:
            values["golden_accuracy"] = golden.overall["accuracy"]
            values["golden_stable_accuracy"] = golden.baseline_overall.get("accuracy")
            values["golden_status"] = evaluation.golden_status
        values["labels_status"] = evaluation.labels_status
    if values["span"] is not None:
        verdict = span_verdicts.span_verdicts(metadata_path, pipeline_name).get(values["span"])
        if verdict is not None:
            values["verdict"], values["verdict_reason"] = verdict.verdict, verdict.reason
    pusher = outputs("Pusher")
    if pusher:
        (pushed,) = pusher["pushed_model"]
        if pushed.custom_properties["pushed"].int_value == 1:
            values["pushed_version"] = pushed.custom_properties["pushed_version"].string_value
    return SpanRun(**values)


def _examples_in(statistics_uri: str) -> int:
    """Examples over every split of a StatisticsGen output."""
    pattern = os.path.join(statistics_uri, "Split-*", STATS_FILE)
    return sum(tfdv.load_stats_binary(path).datasets[0].num_examples for path in tf.io.gfile.glob(pattern))


def _spans_trained_on(store, transformed: list) -> list[int]:
    """The spans behind the Trainer's transformed examples: the Examples Transform read."""
    examples = metadata.producers_inputs(store, transformed, "examples")
    return sorted({artifact.custom_properties[SPAN].int_value for artifact in examples})


def training_summary(model_run_uri: str) -> dict:
    """The Trainer's TRAINING_SUMMARY_FILE in its ModelRun directory; {} when there is none."""
    path = os.path.join(model_run_uri, TRAINING_SUMMARY_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as stream:
        return json.load(stream)


def span_table(metadata_path: str, pipeline_name: str) -> dict[int, SpanRun]:
    """{span: the SpanRun of the newest run that ingested it}, for every ingested span."""
    store = metadata.open_store(metadata_path)
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return {}
    runs = sorted((c for c in store.get_children_contexts_by_context(pipeline.id) if c.type == "pipeline_run"),
                  key=lambda c: c.create_time_since_epoch)
    found: dict[int, SpanRun] = {}
    for run in runs:
        summary = span_run(metadata_path, pipeline_name, run.name)
        if summary.span is not None:
            found[summary.span] = summary
    return found
