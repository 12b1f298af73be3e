"""The latest evaluation of a pipeline, found through ML Metadata and read from TFMA's outputs
into plain Python: what the HTML report and the review notebook show.

Nothing here re-implements TFMA's judgement: the decision and each failure come from the
validation result the Evaluator wrote; the list of rules comes from the EvalConfig it ran with.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import tensorflow_model_analysis as tfma
from google.protobuf import json_format
from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.slicer import slicer_lib

from fmnist import features
from tfx_pipeline import blessing as blessing_keys
from tfx_pipeline import eval_config as names
from tfx_pipeline import label_agreement, metadata
from tfx_pipeline.components.serving_validator import RESULT_FILE
from tfx_pipeline.config import (
    BLESSING_GATE_ID,
    BLESSING_SPLIT,
    EVALUATOR_ID,
    GOLDEN_EVALUATOR_ID,
    GOLDEN_SPLIT,
    REPORTED_SPLIT,
    SERVING_VALIDATOR_ID,
    TEST_EVALUATOR_ID,
)

OVERALL_METRICS = (names.EXAMPLE_COUNT, names.ACCURACY, names.MACRO_PRECISION, names.MACRO_RECALL,
                   names.CROSS_ENTROPY)


class EvaluationNotFoundError(LookupError):
    """No completed Evaluator run is recorded in the ML Metadata store."""


@dataclass(frozen=True)
class ClassMetrics:
    class_id: int
    name: str
    examples: int
    precision: float
    recall: float
    auc: float
    baseline_recall: float | None = None


@dataclass(frozen=True)
class ThresholdCheck:
    """One blessing rule as applied to one value (e.g. the recall of one class)."""

    rule: str  # e.g. "recall of Shirt (class 6)"
    slice: str  # e.g. "overall"
    bound: str  # e.g. ">= 0.7000"
    value: float
    passed: bool
    lower_bound: float | None = None  # for value floors, to draw them
    class_id: int | None = None  # set for a per-class rule


@dataclass(frozen=True)
class SplitEvaluation:
    split: str
    component: str
    uri: str
    model_name: str  # the candidate's name in TFMA's outputs ("candidate" when there is a baseline)
    overall: dict[str, float]
    per_class: list[ClassMetrics]
    confusion: np.ndarray  # [true class, predicted class] counts
    baseline_overall: dict[str, float] = field(default_factory=dict)
    judged: bool = False  # did this Evaluator have thresholds?
    validation_ok: bool | None = None  # TFMA's verdict, when judged
    checks: list[ThresholdCheck] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # TFMA's own words for each failed rule

    @property
    def has_baseline(self) -> bool:
        return bool(self.baseline_overall)

    @property
    def recall_floor(self) -> float | None:
        """The lowest per-class floor the Evaluator applied (None on a split it did not judge)."""
        floors = [c.lower_bound for c in self.checks if c.class_id is not None and c.lower_bound is not None]
        return min(floors) if floors else None


@dataclass(frozen=True)
class Evaluation:
    pipeline_name: str
    run_id: str
    model_uri: str
    baseline_model_uri: str | None
    examples_uris: dict[str, str]  # split -> the Examples artifact its Evaluator read
    blessed: bool | None  # the BlessingGate's decision (eval AND golden); None when nothing judged
    splits: dict[str, SplitEvaluation]
    # The serving check's validation.json (components/serving_validator.py) of the same run, if it ran.
    serving_validation: dict | None = None
    blessing_reason: str = ""  # the BlessingGate's: "passed", or what failed
    golden_status: str = blessing_keys.GOLDEN_NOT_JUDGED  # passed | failed | not judged (no stable model)
    golden_baseline_uri: str | None = None  # the stable model the golden gate compared with
    labels_status: str = label_agreement.NOT_JUDGED  # the BlessingGate's label check: agree | disagree

    @property
    def golden(self) -> SplitEvaluation | None:
        """The golden gate's evaluation (candidate vs the stable model), when it ran."""
        return self.splits.get(GOLDEN_SPLIT)

    @property
    def verdict(self) -> str:
        return {True: "BLESSED", False: "NOT BLESSED", None: "not judged"}[self.blessed]

    @property
    def judged(self) -> SplitEvaluation:
        """The split whose thresholds decide the blessing."""
        return self.splits[BLESSING_SPLIT]


def _load_eval_config(uri: str):
    """The EvalConfig as the Evaluator ran it (TFX drops the change thresholds with no baseline)."""
    with open(os.path.join(uri, "eval_config.json")) as stream:
        run = json.load(stream)
    return json_format.ParseDict(run["evalConfig"], tfma.EvalConfig())


def _model_names(config) -> tuple[str, str | None]:
    candidate = next((s.name for s in config.model_specs if not s.is_baseline), "")
    baseline = next((s.name for s in config.model_specs if s.is_baseline), None)
    return candidate, baseline


def _load_metrics(uri: str) -> dict[tuple, dict]:
    """{slice key: {MetricKey: float}}, slice key () for the whole split."""
    by_slice = {}
    for proto in tfma.load_metrics(uri):
        values = {}
        for entry in proto.metric_keys_and_values:
            if entry.value.HasField("double_value"):
                values[metric_types.MetricKey.from_proto(entry.key)] = entry.value.double_value.value
        by_slice[slicer_lib.deserialize_slice_key(proto.slice_key)] = values
    return by_slice


def _load_confusion(uri: str, model_name: str) -> np.ndarray:
    matrix = np.zeros((features.NUM_CLASSES, features.NUM_CLASSES), dtype=np.int64)
    for proto in tfma.load_plots(uri):
        if proto.slice_key.single_slice_keys:
            continue
        for entry in proto.plot_keys_and_values:
            if entry.key.model_name != model_name:
                continue
            (at_threshold, *_) = entry.value.multi_class_confusion_matrix_at_thresholds.matrices
            for cell in at_threshold.entries:
                if cell.predicted_class_id >= 0:  # -1: no class above the threshold (never at 0.0)
                    matrix[cell.actual_class_id, cell.predicted_class_id] += round(cell.num_weighted_examples)
    return matrix


def _value(metrics: dict, name: str, model: str, class_id: int | None = None, top_k: int | None = None,
           diff: bool = False) -> float:
    sub_key = metric_types.SubKey(class_id=class_id, top_k=top_k) if class_id is not None else None
    key = metric_types.MetricKey(name=name, model_name=model, sub_key=sub_key, is_diff=diff)
    return float(metrics.get(key, math.nan))


def _per_class(overall: dict, confusion: np.ndarray, candidate: str, baseline: str | None) -> list[ClassMetrics]:
    rows = []
    for c, class_name in enumerate(features.CLASS_NAMES):
        rows.append(ClassMetrics(
            class_id=c, name=class_name, examples=int(confusion[c].sum()),
            precision=_value(overall, names.PRECISION, candidate, c, names.TOP_K),
            recall=_value(overall, names.RECALL, candidate, c, names.TOP_K),
            auc=_value(overall, names.AUC, candidate, c),
            baseline_recall=_value(overall, names.RECALL, baseline, c, names.TOP_K) if baseline else None,
        ))
    return rows


def describe_slice(slice_key: tuple) -> str:
    if not slice_key:
        return "overall"
    return ", ".join(f"{column} = {value}" for column, value in slice_key)


def _class_of(key, slice_key: tuple) -> int | None:
    """The class a judged value is about: a binarized sub-key, or accuracy on a `label == c` slice
    (which is class c's recall)."""
    if key.sub_key is not None and key.sub_key.class_id is not None:
        return key.sub_key.class_id
    if (key.name in (names.ACCURACY, names.ACCURACY_CHANGE_BOUND) and len(slice_key) == 1
            and slice_key[0][0] == features.LABEL_KEY):
        return int(slice_key[0][1])
    return None


def describe_metric(key, slice_key: tuple = ()) -> str:
    """Names a judged value as a reviewer would, e.g. accuracy on `label == 6` is Shirt's recall."""
    bound = key.name == names.ACCURACY_CHANGE_BOUND  # the golden gate's: already a change
    text = names.ACCURACY if bound else key.name
    c = _class_of(key, slice_key)
    if c is not None:
        metric = key.name if key.sub_key is not None else "recall"
        text = f"{metric} of {features.CLASS_NAMES[c]} (class {c})"
    if bound:
        return f"{text}, change vs baseline (paired upper bound)"
    return f"{text}, change vs baseline" if key.is_diff else text


def _describe_bound(threshold) -> str:
    if isinstance(threshold, tfma.GenericValueThreshold):
        fields = (("lower_bound", ">= {:.4f}"), ("upper_bound", "<= {:.4f}"))
    else:  # a change threshold, judged on the difference from the baseline
        sign = ">=" if threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER else "<="
        fields = (("absolute", sign + " {:+.4f}"), ("relative", sign + " {:+.2%} relative"))
    return " and ".join(text.format(getattr(threshold, name).value) for name, text in fields
                        if threshold.HasField(name))


def _lower_bound(threshold) -> float | None:
    has_floor = hasattr(threshold, "lower_bound") and threshold.HasField("lower_bound")
    return threshold.lower_bound.value if has_floor else None


def _threshold_checks(config, by_slice: dict, candidate: str, failed: set) -> list[ThresholdCheck]:
    """Every (rule, slice, value) the Evaluator judged; `passed` is TFMA's verdict."""
    checks = []
    thresholds = tfma.metrics.metric_thresholds_from_metrics_specs(config.metrics_specs, config)
    for key, scoped in thresholds.items():
        if key.model_name != candidate:
            continue
        for slice_spec, threshold in scoped:
            spec = slicer_lib.SingleSliceSpec(spec=slice_spec) if slice_spec is not None else None
            for slice_key, metrics in by_slice.items():
                if (spec is not None and not spec.is_slice_applicable(slice_key)) or key not in metrics:
                    continue
                checks.append(ThresholdCheck(
                    rule=describe_metric(key, slice_key), slice=describe_slice(slice_key),
                    bound=_describe_bound(threshold),
                    value=float(metrics[key]), passed=(slice_key, key) not in failed,
                    lower_bound=_lower_bound(threshold), class_id=_class_of(key, slice_key),
                ))
    return checks


def _validation(uri: str) -> tuple[bool, set, list[str]]:
    result = tfma.load_validation_result(uri)
    failed, messages = set(), []
    for per_slice in result.metric_validations_per_slice:
        slice_key = slicer_lib.deserialize_slice_key(per_slice.slice_key)
        for failure in per_slice.failures:
            key = metric_types.MetricKey.from_proto(failure.metric_key)
            failed.add((slice_key, key))
            messages.append(f"{describe_metric(key, slice_key)} on {describe_slice(slice_key)}: {failure.message}")
    messages += [f"missing slice: {s}" for s in result.missing_slices]
    return result.validation_ok, failed, messages


def load_split_evaluation(uri: str, split: str, component: str) -> SplitEvaluation:
    """One Evaluator output directory (an `evaluation` artifact's URI), read into plain values."""
    config = _load_eval_config(uri)
    candidate, baseline = _model_names(config)
    by_slice = _load_metrics(uri)
    overall = by_slice.get((), {})
    confusion = _load_confusion(uri, candidate)
    judged = any(m.per_slice_thresholds or m.HasField("threshold")
                 for spec in config.metrics_specs for m in spec.metrics)
    validation_ok, failed, messages = _validation(uri)
    return SplitEvaluation(
        split=split, component=component, uri=uri, model_name=candidate,
        overall={name: _value(overall, name, candidate) for name in OVERALL_METRICS},
        per_class=_per_class(overall, confusion, candidate, baseline),
        confusion=confusion,
        baseline_overall={name: _value(overall, name, baseline) for name in OVERALL_METRICS} if baseline else {},
        judged=judged,
        validation_ok=validation_ok if judged else None,
        checks=_threshold_checks(config, by_slice, candidate, failed) if judged else [],
        failures=messages,
    )


def load_latest(metadata_path: str, pipeline_name: str | None = None, run_id: str | None = None) -> Evaluation:
    """The newest blessing evaluation (of pipeline run `run_id`, if given), the test-split
    evaluation of the same run, and the decision."""
    if not os.path.exists(metadata_path):
        raise EvaluationNotFoundError(f"no ML Metadata store at {metadata_path}")
    pipeline_name = pipeline_name or metadata.only_pipeline_name(metadata_path)
    judged = metadata.latest_execution_outputs(metadata_path, pipeline_name, EVALUATOR_ID, run_id=run_id)
    if judged is None:
        raise EvaluationNotFoundError(
            f"pipeline {pipeline_name!r} in {metadata_path} has no completed {EVALUATOR_ID} run"
            f"{f' in run {run_id}' if run_id else ' yet'}")
    def same_run(component: str) -> metadata.ExecutionOutputs | None:
        return metadata.latest_execution_outputs(metadata_path, pipeline_name, component, run_id=judged.run_id)

    store = metadata.open_store(metadata_path)
    splits, examples_uris = {}, {}
    golden = same_run(GOLDEN_EVALUATOR_ID)
    for split, component, outputs in ((BLESSING_SPLIT, EVALUATOR_ID, judged),
                                      (GOLDEN_SPLIT, GOLDEN_EVALUATOR_ID, golden),
                                      (REPORTED_SPLIT, TEST_EVALUATOR_ID, same_run(TEST_EVALUATOR_ID))):
        if outputs is not None:
            (evaluation,) = outputs.artifacts["evaluation"]
            splits[split] = load_split_evaluation(evaluation.uri, split, component)
            (examples,) = metadata.execution_artifacts(store, outputs.execution.id,
                                                       [metadata_store_pb2.Event.INPUT])["examples"]
            examples_uris[split] = examples.uri

    inputs = metadata.execution_artifacts(store, judged.execution.id, [metadata_store_pb2.Event.INPUT])
    (model,) = inputs["model"]
    baseline = inputs.get("baseline_model", [None])[0]
    gate = same_run(BLESSING_GATE_ID)
    # The gate's blessing decides; a run from before the golden gate has only the Evaluator's.
    (blessing,) = (gate or judged).artifacts["blessing"]
    properties = blessing.custom_properties
    golden_baseline = None
    if golden is not None:
        golden_inputs = metadata.execution_artifacts(store, golden.execution.id, [metadata_store_pb2.Event.INPUT])
        golden_baseline = golden_inputs.get("baseline_model", [None])[0]
    return Evaluation(
        pipeline_name=pipeline_name, run_id=judged.run_id, model_uri=model.uri,
        baseline_model_uri=baseline.uri if baseline else None, examples_uris=examples_uris,
        blessed=blessing_keys.blessing_state(blessing), splits=splits,
        serving_validation=_serving_validation(metadata_path, pipeline_name, judged.run_id),
        blessing_reason=properties[blessing_keys.REASON_KEY].string_value if gate else "",
        golden_status=(properties[blessing_keys.GOLDEN_KEY].string_value if gate else
                       blessing_keys.GOLDEN_NOT_JUDGED),
        golden_baseline_uri=golden_baseline.uri if golden_baseline else None,
        labels_status=(properties[blessing_keys.LABELS_KEY].string_value
                       if gate and blessing_keys.LABELS_KEY in properties else label_agreement.NOT_JUDGED),
    )


def _serving_validation(metadata_path: str, pipeline_name: str, run_id: str) -> dict | None:
    validated = metadata.latest_execution_outputs(metadata_path, pipeline_name, SERVING_VALIDATOR_ID, run_id=run_id)
    if validated is None:
        return None
    (blessing,) = validated.artifacts["blessing"]
    path = os.path.join(blessing.uri, RESULT_FILE)
    if not os.path.exists(path):  # TFX's InfraValidator (Docker) writes no such file: its flag files say it
        return {"blessed": os.path.exists(os.path.join(blessing.uri, "INFRA_BLESSED")), "reason": "",
                "server": "TFX InfraValidator"}
    with open(path) as stream:
        return json.load(stream)
