"""Span verdicts: what the loop decided about each ingested span, kept in ML Metadata.

Every span a run ingests ends with one verdict, a custom property of its Examples artifact(s)
(so a resolver reads it with the artifacts it already has):

    accepted     its run was blessed (eval hold-out and golden gate) and infra-blessed; or its
                 model missed only the absolute floors (not pushed: nothing shows the data did
                 harm, and a window must grow for a first small span's successors to clear them)
    drifted      the drift gate stopped it (distribution moved from the last accepted span)
    anomalous    ExampleValidator found it does not match the schema
    rejected     its candidate did worse: the golden gate or the comparison with the latest
                 blessed model failed, it was not infra-blessed, or (by the loop) its canary was
                 rolled back
    quarantined  a person took it out of training (`fmnist spans quarantine N --why ...`)
    released     a person let it back in (`fmnist spans release N --why ...`)

Only `accepted` and `released` spans enter a rolling window (tfx_pipeline.span_window), and only
their statistics become the drift gate's baseline: a bad span never reaches a later model unless
someone releases it. A span with no verdict (its run crashed) is not trained on either.

Each change is also an execution of type VERDICT_EXECUTION_TYPE, with the Examples as its input
and who/why/when as properties: the audit trail `fmnist spans history` prints.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ml_metadata import errors, metadata_store
from ml_metadata.proto import metadata_store_pb2

from tfx_pipeline import metadata
from tfx_pipeline.config import (
    BLESSING_GATE_ID,
    EVALUATOR_ID,
    EXAMPLE_GEN_ID,
    SERVING_VALIDATOR_ID,
)

ACCEPTED: Final = "accepted"
DRIFTED: Final = "drifted"
ANOMALOUS: Final = "anomalous"
REJECTED: Final = "rejected"
QUARANTINED: Final = "quarantined"
RELEASED: Final = "released"
VERDICTS: Final = (ACCEPTED, DRIFTED, ANOMALOUS, REJECTED, QUARANTINED, RELEASED)
TRAINABLE: Final = frozenset({ACCEPTED, RELEASED})  # what a window and the drift baseline take
BY_HAND: Final = (QUARANTINED, RELEASED)

# Custom properties of an Examples artifact (and of each verdict execution).
VERDICT: Final = "span_verdict"
REASON: Final = "span_verdict_reason"
BY: Final = "span_verdict_by"
AT: Final = "span_verdict_time"  # seconds since the epoch
VERDICT_EXECUTION_TYPE: Final = "fmnist.SpanVerdict"
_SPAN = "span"  # ExampleGen's custom property


class VerdictError(ValueError):
    """A verdict change that cannot be made; one line saying why."""


@dataclass(frozen=True)
class Verdict:
    span: int
    verdict: str
    reason: str
    by: str
    at: float

    @property
    def trainable(self) -> bool:
        return self.verdict in TRAINABLE


def verdict_of(artifact) -> str | None:
    """The verdict property of an Examples artifact (a tfx Artifact or an MLMD proto), None if unset."""
    properties = getattr(artifact, "mlmd_artifact", artifact).custom_properties
    return properties[VERDICT].string_value if VERDICT in properties else None


def _span(artifact: metadata_store_pb2.Artifact) -> int:
    return artifact.custom_properties[_SPAN].int_value


def _ingestions(store: metadata_store.MetadataStore, pipeline_name: str) -> list[metadata_store_pb2.Artifact]:
    """Every Examples artifact ExampleGen wrote for this pipeline, oldest first."""
    node = store.get_context_by_type_and_name("node", f"{pipeline_name}.{EXAMPLE_GEN_ID}")
    if node is None:
        return []
    artifacts = [a for a in store.get_artifacts_by_context(node.id) if _SPAN in a.custom_properties]
    return sorted(artifacts, key=lambda a: a.id)


def span_verdicts(metadata_path: str, pipeline_name: str) -> dict[int, Verdict]:
    """{span: its current verdict} for every ingested span that has one (the newest ingestion's)."""
    store = metadata.open_store(metadata_path)
    found: dict[int, Verdict] = {}
    for artifact in _ingestions(store, pipeline_name):
        if VERDICT in artifact.custom_properties:
            found[_span(artifact)] = _read(artifact)
    return found


def ingested_spans(metadata_path: str, pipeline_name: str) -> set[int]:
    """Spans some run of this pipeline ingested, whatever came of them."""
    return {_span(a) for a in _ingestions(metadata.open_store(metadata_path), pipeline_name)}


def _read(item) -> Verdict:
    props = item.custom_properties
    return Verdict(span=props[_SPAN].int_value, verdict=props[VERDICT].string_value,
                   reason=props[REASON].string_value, by=props[BY].string_value, at=props[AT].double_value)


def history(metadata_path: str, pipeline_name: str) -> list[Verdict]:
    """Every verdict ever recorded for this pipeline's spans, oldest first."""
    store = metadata.open_store(metadata_path)
    try:
        executions = store.get_executions_by_type(VERDICT_EXECUTION_TYPE)
    except errors.NotFoundError:  # the type does not exist before the first verdict
        return []
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    mine = set() if pipeline is None else {e.id for e in store.get_executions_by_context(pipeline.id)}
    return [_read(e) for e in sorted(executions, key=lambda e: e.id) if e.id in mine]


def record(metadata_path: str, pipeline_name: str, span: int, verdict: str, reason: str, by: str | None = None,
           allowed_from: Iterable[str] | None = None) -> Verdict:
    """Sets `span`'s verdict (on each of its Examples artifacts) and appends an audit execution.
    `allowed_from`: the verdicts the span may have now (None: any, or none yet); anything else is
    a VerdictError and nothing is written. Returns the verdict recorded."""
    if verdict not in VERDICTS:
        raise VerdictError(f"unknown verdict {verdict!r} (one of {', '.join(VERDICTS)})")
    reason = " ".join(reason.split())
    if not reason:
        raise VerdictError("a verdict needs a reason")
    store = metadata.open_store(metadata_path, writable=True)
    ingestions = [a for a in _ingestions(store, pipeline_name) if _span(a) == span]
    if not ingestions:
        raise VerdictError(f"span {span} was never ingested by pipeline {pipeline_name!r} ({metadata_path})")
    current = verdict_of(ingestions[-1])
    if allowed_from is not None and current not in set(allowed_from):
        raise VerdictError(f"span {span} is {current or 'without a verdict'}; only a span that is "
                           f"{' or '.join(allowed_from)} can become {verdict}")
    made = Verdict(span, verdict, reason, by or f"{getpass.getuser()} (fmnist)", time.time())
    for artifact in ingestions:
        _set(artifact, made)
    store.put_artifacts(ingestions)
    _append_execution(store, pipeline_name, ingestions[-1], made)
    return made


def _set(item, made: Verdict) -> None:
    props = item.custom_properties
    props[VERDICT].string_value = made.verdict
    props[REASON].string_value = made.reason
    props[BY].string_value = made.by
    props[AT].double_value = made.at


def _append_execution(store: metadata_store.MetadataStore, pipeline_name: str,
                      examples: metadata_store_pb2.Artifact, made: Verdict) -> None:
    type_id = store.put_execution_type(metadata_store_pb2.ExecutionType(name=VERDICT_EXECUTION_TYPE))
    execution = metadata_store_pb2.Execution(type_id=type_id, last_known_state=metadata_store_pb2.Execution.COMPLETE)
    execution.custom_properties[_SPAN].int_value = made.span
    _set(execution, made)
    event = metadata_store_pb2.Event(artifact_id=examples.id, type=metadata_store_pb2.Event.INPUT)
    event.path.steps.add().key = "examples"
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    contexts = [pipeline] if pipeline is not None else []
    store.put_execution(execution, [(examples, event)], contexts, reuse_context_if_already_exist=True)


# -- the verdict of a finished run ------------------------------------------------------------------
def run_verdict(metadata_path: str, pipeline_name: str, run_id: str, stopped_by: str | None,
                stop_reason: str = "") -> tuple[int, str, str] | None:
    """(span, verdict, reason) for pipeline run `run_id`: `stopped_by` is DRIFTED or ANOMALOUS when a
    gate stopped it (with `stop_reason`, the gate's line); otherwise accepted when the blessing
    gate and the serving check both said yes, else rejected with what said no. None when the run
    ingested nothing, or failed otherwise (the span stays without a verdict, so out of windows)."""
    gen = metadata.latest_execution_outputs(metadata_path, pipeline_name, EXAMPLE_GEN_ID, run_id=run_id)
    if gen is None:
        return None
    span = _span(gen.artifacts["examples"][0])
    if stopped_by is not None:
        return span, stopped_by, stop_reason
    gate = metadata.latest_execution_outputs(metadata_path, pipeline_name, BLESSING_GATE_ID, run_id=run_id)
    if gate is None:
        return None
    (blessing,) = gate.artifacts["blessing"]
    if blessing.custom_properties["blessed"].int_value != 1:
        if blessing.custom_properties["golden"].string_value == "failed":
            return span, REJECTED, f"not blessed: {blessing.custom_properties['reason'].string_value}"
        compared, floors = _evaluator_failures(metadata_path, pipeline_name, run_id)
        if compared:
            return span, REJECTED, f"not blessed: worse than the latest blessed model on its eval hold-out ({compared})"
        # Only the absolute floors failed: the model is not good enough to serve, but nothing shows
        # the span's data did harm. Keeping it in the windows lets them grow until a model clears
        # the floors; rejecting it would starve a loop whose first spans are small.
        return span, ACCEPTED, f"kept for training; its model missed the blessing floors ({floors}), not pushed"
    served = metadata.latest_execution_outputs(metadata_path, pipeline_name, SERVING_VALIDATOR_ID, run_id=run_id)
    if served is None:
        return None
    (infra,) = served.artifacts["blessing"]
    if infra.custom_properties["blessed"].int_value != 1:
        why = infra.custom_properties["reason"].string_value if "reason" in infra.custom_properties else ""
        return span, REJECTED, f"not infra-blessed: {why or 'the serving check failed'}"
    return span, ACCEPTED, "blessed (eval and golden gate) and infra-blessed"


def _evaluator_failures(metadata_path: str, pipeline_name: str, run_id: str) -> tuple[str, str]:
    """(failed comparisons with the baseline, failed absolute floors) of the run's Evaluator, each
    as "what value" pieces joined by commas ("" when none failed)."""
    import tensorflow_model_analysis as tfma

    judged = metadata.latest_execution_outputs(metadata_path, pipeline_name, EVALUATOR_ID, run_id=run_id)
    if judged is None:
        return "", ""
    result = tfma.load_validation_result(judged.artifacts["evaluation"][0].uri)
    compared, floors = [], []
    for per_slice in result.metric_validations_per_slice:
        columns = {c.column: c.int64_value for c in per_slice.slice_key.single_slice_keys}
        where = f"class {columns['label']} recall" if "label" in columns else "accuracy"
        for failure in per_slice.failures:
            value = failure.metric_value.double_value.value
            if failure.metric_key.is_diff:
                compared.append(f"{where} change {value:+.4f}")
            else:
                floors.append(f"{where} {value:.4f}")
    return ", ".join(compared), ", ".join(floors)
