"""TFMA EvalConfig built from the typed pipeline config: metrics, slices and blessing rules.

The same metrics run on the `eval` split (the Evaluator that blesses, with thresholds) and on the
`test` split (reported, never gating). Metric names here are the ones reports read back.

All but the example count come from tfx_pipeline/tfma_metrics.py, which computes them from one
pass over a slice's examples instead of TFMA's per-example binarized metrics, Keras wrappers and
plot combiner: same keys and values (see its docstring for the one exception), about 6x less
Evaluator time on the full data (benchmarks/evaluator.py --components).
"""

from __future__ import annotations

import json

import tensorflow_model_analysis as tfma

from fmnist import features
from tfx_pipeline import tfma_metrics
from tfx_pipeline.config import EvaluationThresholds

EXAMPLE_COUNT = "example_count"
ACCURACY = tfma_metrics.ACCURACY
CROSS_ENTROPY = tfma_metrics.CROSS_ENTROPY
ACCURACY_CHANGE_BOUND = tfma_metrics.ACCURACY_CHANGE_BOUND  # golden gate: paired change vs stable, upper bound
PRECISION = tfma_metrics.PRECISION  # per class, one-vs-rest, top-1 (sub-key classId:c topK:1)
RECALL = tfma_metrics.RECALL
AUC = tfma_metrics.AUC  # per class, one-vs-rest over the class probability (sub-key classId:c)
MACRO_PRECISION = tfma_metrics.MACRO_PRECISION
MACRO_RECALL = tfma_metrics.MACRO_RECALL
CONFUSION_MATRIX_PLOT = "ArgmaxConfusionMatrixPlot"  # TFMA's MultiClassConfusionMatrixPlot, from the shared pass
TOP_K = tfma_metrics.TOP_K
METRICS_MODULE = tfma_metrics.__name__

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


def _metric(class_name: str, thresholds: list | None = None, module: str = "", **config) -> tfma.MetricConfig:
    return tfma.MetricConfig(class_name=class_name, module=module, config=json.dumps(config) if config else "",
                             per_slice_thresholds=thresholds or [])


def _golden_thresholds(thresholds: EvaluationThresholds) -> list[tfma.PerSliceMetricThreshold]:
    """Change thresholds against the stable model, on the paired change bound (tfma_metrics'
    PairedAccuracyChange) of overall accuracy and of accuracy on each `label == c` slice (class c's
    recall): refuse a candidate when it is worse than stable by more than the margin at the gate's
    confidence, not when a few golden images fall the other way. No floors: the golden gate asks
    "no worse than what serves", the eval split's floors ask "good enough". With no stable model
    yet TFX drops change thresholds, and the golden Evaluator judges nothing (its blessing has no
    `blessed`)."""

    def drop(limit: float) -> tfma.MetricThreshold:
        return tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -limit}))

    return [tfma.PerSliceMetricThreshold(slicing_specs=[OVERALL_SLICE], threshold=drop(thresholds.max_golden_drop))] + [
        tfma.PerSliceMetricThreshold(slicing_specs=[class_slice(c)], threshold=drop(thresholds.max_golden_class_drop))
        for c in CLASS_IDS]


def create_eval_config(thresholds: EvaluationThresholds | None, golden: bool = False) -> tfma.EvalConfig:
    """The EvalConfig for one split; `thresholds=None` reports without judging (no blessing).
    `golden`: the golden gate's rules (change vs the stable baseline) instead of the blessing's."""
    accuracy_thresholds = golden_metrics = None
    if thresholds is not None and golden:
        golden_metrics = [_metric("PairedAccuracyChange", _golden_thresholds(thresholds), module=METRICS_MODULE,
                                  name=ACCURACY_CHANGE_BOUND, confidence=thresholds.golden_confidence)]
    elif thresholds is not None:
        accuracy_thresholds = _accuracy_thresholds(thresholds)
    metrics = tfma.MetricsSpec(metrics=[
        _metric("ExampleCount"),
        # The project's numpy twins of the Keras metrics: same names, same float32 values.
        _metric("SparseCategoricalAccuracy", accuracy_thresholds, module=METRICS_MODULE, name=ACCURACY),
        _metric("SparseCategoricalCrossentropy", module=METRICS_MODULE, name=CROSS_ENTROPY),
        _metric(CONFUSION_MATRIX_PLOT, module=METRICS_MODULE),
        # Per-class precision/recall (top-1) and AUC, and the macro averages: no `binarize` here.
        _metric("ClassificationSummary", module=METRICS_MODULE, num_classes=features.NUM_CLASSES),
        *(golden_metrics or []),
    ])
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=features.TF_EXAMPLE_SIGNATURE,
            label_key=features.LABEL_KEY,
            prediction_key="probabilities",
        )],
        slicing_specs=[OVERALL_SLICE, BY_CLASS_SLICE],
        metrics_specs=[metrics],
    )
