"""Span verdicts: what the loop decided about each ingested span, kept in ML Metadata.

Every span a run ingests ends with one verdict, an artifact of type VERDICT_TYPE in ML Metadata
(span, verdict, reason, who, when as properties; the newest for a span counts):

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

Each verdict artifact is the output of an execution of type VERDICT_EXECUTION_TYPE whose input
is the span's Examples: lineage from the data to every decision about it, and the audit trail
`fmnist spans history` prints. The Examples artifacts themselves are never modified: TFX's cache
key hashes its input artifacts whole, so a property written on them would re-run every step
downstream of an unchanged span.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ml_metadata import errors, metadata_store
from ml_metadata.proto import metadata_store_pb2

from tfx_pipeline import blessing as blessing_keys
from tfx_pipeline import label_agreement, metadata
from tfx_pipeline.config import (
    BLESSING_GATE_ID,
    EVALUATOR_ID,
    EXAMPLE_GEN_ID,
    PUSHER_ID,
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

# Custom properties of a verdict artifact (and of its execution).
VERDICT: Final = "verdict"
REASON: Final = "reason"
BY: Final = "by"
AT: Final = "time"  # seconds since the epoch
PIPELINE: Final = "pipeline"
VERDICT_TYPE: Final = "fmnist.SpanVerdict"
VERDICT_EXECUTION_TYPE: Final = "fmnist.SpanVerdictChange"
_SPAN = "span"  # ExampleGen's custom property, and the verdict's


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


def _span(artifact: metadata_store_pb2.Artifact) -> int:
    return artifact.custom_properties[_SPAN].int_value


def _ingestions(store: metadata_store.MetadataStore, pipeline_name: str) -> list[metadata_store_pb2.Artifact]:
    """Every Examples artifact ExampleGen wrote for this pipeline, oldest first."""
    node = store.get_context_by_type_and_name("node", f"{pipeline_name}.{EXAMPLE_GEN_ID}")
    if node is None:
        return []
    artifacts = [a for a in store.get_artifacts_by_context(node.id) if _SPAN in a.custom_properties]
    return sorted(artifacts, key=lambda a: a.id)


def _verdict_artifacts(store: metadata_store.MetadataStore, pipeline_name: str | None) -> list:
    """Every verdict recorded (for `pipeline_name`, or any pipeline), oldest first."""
    try:
        found = store.get_artifacts_by_type(VERDICT_TYPE)
    except errors.NotFoundError:  # the type does not exist before the first verdict
        return []
    mine = [a for a in found if pipeline_name is None or a.custom_properties[PIPELINE].string_value == pipeline_name]
    return sorted(mine, key=lambda a: a.id)


def current_verdicts(store: metadata_store.MetadataStore, pipeline_name: str | None = None) -> dict[int, Verdict]:
    """{span: its newest verdict}, read from an open store (what the resolver strategies use)."""
    return {verdict.span: verdict for verdict in map(_read, _verdict_artifacts(store, pipeline_name))}


def span_verdicts(metadata_path: str, pipeline_name: str) -> dict[int, Verdict]:
    """{span: its current verdict} for every span that has one."""
    return current_verdicts(metadata.open_store(metadata_path), pipeline_name)


def ingested_spans(metadata_path: str, pipeline_name: str) -> set[int]:
    """Spans some run of this pipeline ingested, whatever came of them."""
    return {_span(a) for a in _ingestions(metadata.open_store(metadata_path), pipeline_name)}


def _read(item) -> Verdict:
    props = item.custom_properties
    return Verdict(span=props[_SPAN].int_value, verdict=props[VERDICT].string_value,
                   reason=props[REASON].string_value, by=props[BY].string_value, at=props[AT].double_value)


def history(metadata_path: str, pipeline_name: str) -> list[Verdict]:
    """Every verdict ever recorded for this pipeline's spans, oldest first."""
    return [_read(a) for a in _verdict_artifacts(metadata.open_store(metadata_path), pipeline_name)]


def checked(span: int, verdict: str, reason: str, current: str | None,
            allowed_from: Iterable[str | None] | None) -> str:
    """The reason, normalised, for `span` going from verdict `current` to `verdict`; VerdictError
    when the verdict is unknown, the reason empty, or `current` is not one of `allowed_from` (None:
    any). The rule of both stores (here and tfx_pipeline.vertex_verdicts)."""
    if verdict not in VERDICTS:
        raise VerdictError(f"unknown verdict {verdict!r} (one of {', '.join(VERDICTS)})")
    reason = " ".join(reason.split())
    if not reason:
        raise VerdictError("a verdict needs a reason")
    if allowed_from is not None and current not in set(allowed_from):
        allowed_from = list(allowed_from)
        raise VerdictError(f"span {span} is {current or 'without a verdict'}; only a span that is "
                           f"{' or '.join(v for v in allowed_from if v)} can become {verdict}")
    return reason


def manual_change(action: str) -> tuple[str, list[str]]:
    """(the verdict, the verdicts a span may have now) of a person's `quarantine` or `release`."""
    if action == "quarantine":
        return QUARANTINED, [v for v in VERDICTS if v != QUARANTINED]
    return RELEASED, [v for v in VERDICTS if v not in TRAINABLE]


def record(metadata_path: str, pipeline_name: str, span: int, verdict: str, reason: str, by: str | None = None,
           allowed_from: Iterable[str | None] | None = None) -> Verdict:
    """Records `span`'s new verdict (an artifact, output of an audit execution reading the span's
    newest Examples). `allowed_from`: the verdicts the span may have now (None: any, or none yet);
    anything else is a VerdictError and nothing is written. Returns the verdict recorded."""
    if verdict not in VERDICTS or not reason.strip():
        checked(span, verdict, reason, None, None)  # the one-line error, before the store is opened
    store = metadata.open_store(metadata_path, writable=True)
    ingestions = [a for a in _ingestions(store, pipeline_name) if _span(a) == span]
    if not ingestions:
        raise VerdictError(f"span {span} was never ingested by pipeline {pipeline_name!r} ({metadata_path})")
    now = current_verdicts(store, pipeline_name).get(span)
    reason = checked(span, verdict, reason, now.verdict if now else None, allowed_from)
    made = Verdict(span, verdict, reason, by or f"{getpass.getuser()} (fmnist)", time.time())
    _append(store, pipeline_name, ingestions[-1], made)
    return made


def _set(item, made: Verdict, pipeline_name: str) -> None:
    props = item.custom_properties
    props[_SPAN].int_value = made.span
    props[VERDICT].string_value = made.verdict
    props[REASON].string_value = made.reason
    props[BY].string_value = made.by
    props[AT].double_value = made.at
    props[PIPELINE].string_value = pipeline_name


def _append(store: metadata_store.MetadataStore, pipeline_name: str,
            examples: metadata_store_pb2.Artifact, made: Verdict) -> None:
    artifact_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name=VERDICT_TYPE))
    execution_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name=VERDICT_EXECUTION_TYPE))
    artifact = metadata_store_pb2.Artifact(type_id=artifact_type, state=metadata_store_pb2.Artifact.LIVE)
    _set(artifact, made, pipeline_name)
    execution = metadata_store_pb2.Execution(type_id=execution_type,
                                             last_known_state=metadata_store_pb2.Execution.COMPLETE)
    _set(execution, made, pipeline_name)
    read = metadata_store_pb2.Event(artifact_id=examples.id, type=metadata_store_pb2.Event.INPUT)
    read.path.steps.add().key = "examples"
    wrote = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
    wrote.path.steps.add().key = "verdict"
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    contexts = [pipeline] if pipeline is not None else []
    store.put_execution(execution, [(examples, read), (artifact, wrote)], contexts,
                        reuse_context_if_already_exist=True)


def span_of_pushed_version(metadata_path: str, pipeline_name: str, version: int | str) -> int | None:
    """The span ingested by the run whose Pusher pushed `version` (None when no run of this
    pipeline did): lineage through the run context, no evaluation read."""
    store = metadata.open_store(metadata_path)
    for pushed in metadata.all_outputs(metadata_path, pipeline_name, PUSHER_ID, "pushed_model"):
        if pushed.custom_properties["pushed_version"].string_value == str(version):
            run_id = metadata.producing_run(store, pushed)
            gen = metadata.latest_execution_outputs(metadata_path, pipeline_name, EXAMPLE_GEN_ID, run_id=run_id)
            return _span(gen.artifacts["examples"][0]) if gen else None
    return None


# -- the verdict of a finished run ------------------------------------------------------------------
def decide(span: int, stopped_by: str | None, stop_reason: str, blessing: Mapping[str, Any] | None,
           evaluation_uri: str | None, infra: Mapping[str, Any] | None) -> tuple[int, str, str] | None:
    """The rule, on plain values so that both runners apply it (local ML Metadata here, Vertex task
    outputs in tfx_pipeline.vertex_verdicts): `stopped_by` DRIFTED or ANOMALOUS when a gate stopped
    the run (`stop_reason` its line); else accepted when the BlessingGate's `blessing` (its custom
    properties) and the serving check's `infra` both said yes, rejected on evidence of harm (the
    golden gate failed, the span's labels disagree, worse than the latest blessed model), and
    accepted "kept for training" when the model missed only the absolute floors (the Evaluator's
    validation result under `evaluation_uri` tells which). None when a step the rule needs never
    ran (the run failed otherwise: the span stays without a verdict, so out of windows)."""
    if stopped_by is not None:
        return span, stopped_by, stop_reason
    if blessing is None:
        return None
    if int(blessing.get(blessing_keys.BLESSED_KEY, 0)) != 1:
        if (blessing.get(blessing_keys.GOLDEN_KEY) == blessing_keys.GOLDEN_FAILED
                or blessing.get(blessing_keys.LABELS_KEY) == label_agreement.DISAGREE):
            return span, REJECTED, f"not blessed: {blessing.get(blessing_keys.REASON_KEY, '')}"
        compared, floors = evaluator_failures(evaluation_uri) if evaluation_uri else ("", "")
        if compared:
            return span, REJECTED, f"not blessed: worse than the latest blessed model on its eval hold-out ({compared})"
        # Only the absolute floors failed: the model is not good enough to serve, but nothing shows
        # the span's data did harm. Keeping it in the windows lets them grow until a model clears
        # the floors; rejecting it would starve a loop whose first spans are small.
        return span, ACCEPTED, f"kept for training; its model missed the blessing floors ({floors}), not pushed"
    if infra is None:
        return None
    if int(infra.get("blessed", 0)) != 1:
        return span, REJECTED, f"not infra-blessed: {infra.get('reason') or 'the serving check failed'}"
    return span, ACCEPTED, "blessed (eval and golden gate) and infra-blessed"


def _properties(artifact: metadata_store_pb2.Artifact) -> dict[str, Any]:
    """An ML Metadata artifact's custom properties as plain values."""
    return {key: getattr(value, value.WhichOneof("value")) for key, value in artifact.custom_properties.items()
            if value.WhichOneof("value") in ("int_value", "double_value", "string_value")}


def run_verdict(metadata_path: str, pipeline_name: str, run_id: str, stopped_by: str | None,
                stop_reason: str = "") -> tuple[int, str, str] | None:
    """(span, verdict, reason) for local pipeline run `run_id` by decide(): `stopped_by` is DRIFTED or
    ANOMALOUS when a gate stopped it (with `stop_reason`, the gate's line). None when the run
    ingested nothing, or failed otherwise."""
    gen = metadata.latest_execution_outputs(metadata_path, pipeline_name, EXAMPLE_GEN_ID, run_id=run_id)
    if gen is None:
        return None

    def outputs(node_id: str, key: str) -> metadata_store_pb2.Artifact | None:
        found = metadata.latest_execution_outputs(metadata_path, pipeline_name, node_id, run_id=run_id)
        return found.artifacts[key][0] if found is not None else None

    blessing, infra, evaluation = (outputs(BLESSING_GATE_ID, "blessing"), outputs(SERVING_VALIDATOR_ID, "blessing"),
                                   outputs(EVALUATOR_ID, "evaluation"))
    return decide(_span(gen.artifacts["examples"][0]), stopped_by, stop_reason,
                  _properties(blessing) if blessing is not None else None,
                  evaluation.uri if evaluation is not None else None,
                  _properties(infra) if infra is not None else None)


def evaluator_failures(evaluation_uri: str) -> tuple[str, str]:
    """(failed comparisons with the baseline, failed absolute floors) of the Evaluator output at
    `evaluation_uri`, each as "what value" pieces joined by commas ("" when none failed)."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
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
