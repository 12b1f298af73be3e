"""TFMA EvalConfig built from the typed pipeline config: metrics, slices and blessing rules.

The same metrics run on the `eval` split (the Evaluator that blesses, with thresholds) and on the
`test` split (reported, never gating). Metric names here are the ones reports read back.
"""

from __future__ import annotations

import json

import tensorflow_model_analysis as tfma

from fmnist import features
from tfx_pipeline.config import EvaluationThresholds

EXAMPLE_COUNT = "example_count"
ACCURACY = "accuracy"
CROSS_ENTROPY = "sparse_categorical_crossentropy"
PRECISION = "precision"  # per class, one-vs-rest, top-1 (sub-key classId:c topK:1)
RECALL = "recall"
AUC = "auc"  # per class, one-vs-rest over the class probability (sub-key classId:c)
MACRO_PRECISION = "macro_precision"
MACRO_RECALL = "macro_recall"
CONFUSION_MATRIX_PLOT = "MultiClassConfusionMatrixPlot"
TOP_K = 1

CLASS_IDS = list(range(features.NUM_CLASSES))
OVERALL_SLICE = tfma.SlicingSpec()
BY_CLASS_SLICE = tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])


def class_slice(class_id: int) -> tfma.SlicingSpec:
    return tfma.SlicingSpec(feature_values={features.LABEL_KEY: str(class_id)})


def _accuracy_thresholds(thresholds: EvaluationThresholds) -> list[tfma.PerSliceMetricThreshold]:
    """Overall floor and baseline comparison on the overall slice; a recall floor per class.

    Scoped slice by slice because TFMA applies a plain threshold to every slice. On the slice
    `label == c`, accuracy *is* class c's recall, so the per-class floors sit there. (A floor on
    the binarized top-1 Recall would read better but TFMA 0.47 keys its thresholds `classId:c`
    while it stores the values under `classId:c topK:1`, and reports every one as missing.)
    """
    overall = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": thresholds.min_accuracy}),
        # Skipped by the Evaluator when there is no blessed baseline yet (the first run).
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -thresholds.max_accuracy_drop},
        ),
    )
    class_floor = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": thresholds.min_class_recall})
    )
    return [tfma.PerSliceMetricThreshold(slicing_specs=[OVERALL_SLICE], threshold=overall)] + [
        tfma.PerSliceMetricThreshold(slicing_specs=[class_slice(c)], threshold=class_floor) for c in CLASS_IDS
    ]


def _metric(class_name: str, thresholds: list | None = None, **config) -> tfma.MetricConfig:
    return tfma.MetricConfig(class_name=class_name, config=json.dumps(config) if config else "",
                             per_slice_thresholds=thresholds or [])


def _macro(metric_name: str) -> tfma.MetricConfig:
    return tfma.MetricConfig(
        class_name="MacroAverage", module="tfx_pipeline.tfma_metrics",
        config=json.dumps({"metric_name": metric_name, "class_ids": CLASS_IDS, "top_k": TOP_K}),
    )


def create_eval_config(thresholds: EvaluationThresholds | None) -> tfma.EvalConfig:
    """The EvalConfig for one split; `thresholds=None` reports without judging (no blessing)."""
    gate = thresholds is not None
    overall_metrics = tfma.MetricsSpec(metrics=[
        _metric("ExampleCount"),
        _metric("SparseCategoricalAccuracy", _accuracy_thresholds(thresholds) if gate else None, name=ACCURACY),
        _metric("SparseCategoricalCrossentropy"),
        _metric(CONFUSION_MATRIX_PLOT),
    ])
    per_class_metrics = tfma.MetricsSpec(
        binarize=tfma.BinarizationOptions(class_ids={"values": CLASS_IDS}),
        metrics=[
            _metric("Precision", top_k=TOP_K),
            _metric("Recall", top_k=TOP_K),
            _metric("AUC"),
        ],
    )
    # After per_class_metrics: the macro averages read its per-class values.
    macro_metrics = tfma.MetricsSpec(metrics=[_macro(PRECISION), _macro(RECALL)])
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=features.TF_EXAMPLE_SIGNATURE,
            label_key=features.LABEL_KEY,
            prediction_key="probabilities",
        )],
        slicing_specs=[OVERALL_SLICE, BY_CLASS_SLICE],
        metrics_specs=[overall_metrics, per_class_metrics, macro_metrics],
    )
